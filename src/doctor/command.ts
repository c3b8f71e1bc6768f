// `azure-keyvault-pkcs11 doctor [--json]`: loads the configuration, credential and vault backend as the module
// does, then checks everything that can make signing fail, one line per check.
import { createVaultBackend } from "../vault/index.ts";
import { discoverSlots } from "../token/discover.ts";
import type { ModuleConfig, ResolvedSlot } from "../config/types.ts";
import { isManagedHsmHost } from "../config/vaultUrl.ts";
import { checkConfig } from "./config-file.ts";
import { checkCredential } from "./credential.ts";
import { checkModuleFile } from "./module-file.ts";
import { probeVault, type VaultProbe } from "./network.ts";
import { Report, formatLine, parseJsonOption } from "./report.ts";
import { checkSlot, checkVaultSlot } from "./slot.ts";

const USAGE = `usage: azure-keyvault-pkcs11 doctor [--json]

Checks the configuration, the credential, and for each token the road to its vault, its key, a real signature and
its certificate, then the module file and its p11-kit registration. One line per check: ok, warn or FAIL (with the
fix). --json prints an array of {check, slot?, verdict, detail, fix?}. Exit status 1 when any check fails.
`;

/** The ca_files trusted for a vault: the global one and every slot's own on that vault (as the backend does). */
function caFilesFor(config: ModuleConfig, vaultUrl: string): string[] {
  return [...config.caFiles, ...config.slots.filter((slot) => slot.vaultUrl === vaultUrl && slot.caFile).map((slot) => slot.caFile!)];
}

export async function runDoctor(env: NodeJS.ProcessEnv, cliPath: string | undefined, report: Report): Promise<void> {
  const config = checkConfig(env, report);
  if (config) await checkVaults(env, config, report);
  checkModuleFile(env, cliPath, report);
}

async function checkVaults(env: NodeJS.ProcessEnv, config: ModuleConfig, report: Report): Promise<void> {
  const configured = config.slots.length > 0;
  const vaults = configured ? [...new Set(config.slots.map((slot) => slot.vaultUrl))] : config.defaultVaultUrl ? [config.defaultVaultUrl] : [];
  if (vaults.length === 0) return;
  const probes = new Map<string, VaultProbe>();
  for (const vaultUrl of vaults) probes.set(vaultUrl, await probeVault(vaultUrl, caFilesFor(config, vaultUrl), env));
  if (configured) {
    // Every check of a vault under its first slot; each later slot on it gets one line that names its failure.
    const firstSlot = new Map<string, string>();
    for (const slot of config.slots) {
      const probe = probes.get(slot.vaultUrl)!;
      const first = firstSlot.get(slot.vaultUrl);
      if (first === undefined) {
        firstSlot.set(slot.vaultUrl, slot.label);
        for (const result of probe.results) report.add({ ...result, slot: slot.label });
        continue;
      }
      const failure = probe.results.find((result) => result.verdict === "FAIL");
      if (failure) report.add({ ...failure, slot: slot.label, detail: `${failure.detail} (the vault of slot ${first})` });
      else report.ok("network", `${slot.vaultUrl} as for slot ${first}: reachable${probe.results.some((result) => result.verdict === "warn") ? " (see its warnings)" : ""}`, slot.label);
    }
  } else {
    for (const result of probes.get(vaults[0]!)!.results) report.add(result);
  }

  const reachable = [...probes.values()].find((probe) => probe.reachable);
  const scope = reachable?.scope ?? (isManagedHsmHost(new URL(vaults[0]!).hostname) ? "https://managedhsm.azure.net/.default" : "https://vault.azure.net/.default");
  const outcome = await checkCredential(env, config, scope, reachable?.tenantId, report);
  if (!outcome) return;

  const tenantCheck = (probe: VaultProbe, vaultUrl: string, slot?: string): void => {
    if (!probe.reachable || !probe.tenantId || !outcome.tenantId) return;
    if (probe.tenantId.toLowerCase() === outcome.tenantId.toLowerCase()) {
      report.add({ check: "tenant", ...(slot === undefined ? {} : { slot }), verdict: "ok", detail: `the token and ${vaultUrl} are both in tenant ${probe.tenantId}` });
    } else {
      report.fail("tenant", `the token is for tenant ${outcome.tenantId}, but ${vaultUrl} belongs to tenant ${probe.tenantId}`, `use an identity of tenant ${probe.tenantId} (AZURE_TENANT_ID, the tenant in azureauth.json, or \`az login --tenant ${probe.tenantId}\`)`, slot);
    }
  };
  if (configured) for (const slot of config.slots) tenantCheck(probes.get(slot.vaultUrl)!, slot.vaultUrl, slot.label);
  else tenantCheck(probes.get(vaults[0]!)!, vaults[0]!);

  const backend = createVaultBackend(config, { env, credential: outcome.credential });
  try {
    let slots: ResolvedSlot[];
    if (configured) {
      slots = config.slots;
    } else if (!probes.get(vaults[0]!)!.reachable) {
      return;
    } else {
      try {
        slots = await discoverSlots(config, backend);
      } catch (error) {
        report.fail("slots", `cannot list the keys of ${vaults[0]}: ${(error as Error).message}`, `grant the identity keys/list on ${vaults[0]}, or list the keys as slots in config.json`);
        return;
      }
      if (slots.length === 0) {
        report.fail("slots", `${vaults[0]} has no keys: the module has no tokens`, "create a key in the vault, or point AZURE_KEYVAULT_URL at the vault that has them");
        return;
      }
      report.ok("slots", `${slots.length} token(s), one per key in ${vaults[0]}: ${slots.map((slot) => slot.label).join(", ")}`);
    }
    for (const [index, slot] of slots.entries()) {
      if (!probes.get(slot.vaultUrl)?.reachable) continue;
      if (slot.kind === "vault") await checkVaultSlot(slot, index, backend, report);
      else await checkSlot(slot, configured ? index : undefined, backend, report);
    }
  } finally {
    await backend.close();
  }
}

export async function runDoctorCommand(argv: string[]): Promise<number> {
  const json = parseJsonOption(argv, "doctor", USAGE);
  if (typeof json === "number") return json;
  const report = new Report(json ? undefined : (result) => process.stdout.write(formatLine(result)));
  await runDoctor(process.env, process.argv[1], report);
  if (json) process.stdout.write(`${JSON.stringify(report.results, null, 2)}\n`);
  else process.stdout.write(report.failed ? "doctor: some checks FAILED; each says how to fix it\n" : "doctor: no check failed\n");
  return report.failed ? 1 : 0;
}
