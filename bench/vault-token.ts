// A vault token over a vault of 500 keys (issue #10) against a per-key slot for the same key, in one run. Called by
// bench/run.ts (`BENCH_ONLY=vault-token npm run bench` runs only this part).
//
// The emulator runs on a worker thread of this process (test/module/harness.ts) holding KEYS EC P-256 keys; the
// key signed with sits in the middle of the listing. Each measured run is a new process (this file with `child`),
// loading the module through pkcs11js with one of two configs: the per-key slot `{ key_name }` or the vault token
// `{ vault_url }` alone. The child stops after each phase and waits on stdin, so that the emulator's request counts
// are read between phases and each request is charged to the phase during which it arrived:
//   - initialize: C_Initialize;
//   - session: C_GetSlotList, C_GetTokenInfo, C_OpenSession;
//   - find: the first C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal by CKA_CLASS and CKA_LABEL;
//   - sign: C_SignInit + C_Sign (CKM_ECDSA over a SHA-256 digest), verified with node:crypto against the vault's JWK.
// Runs of the two configs alternate, ROUNDS of each; each figure is the median over rounds, and the summary gives
// the vault token's ratios to the per-key slot. No targets: the issue asks that a find not cost one GET per key.
import { spawn } from "node:child_process";
import { createHash, createPublicKey, verify } from "node:crypto";
import { mkdtempSync, readSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { requestsSince, startEmulator } from "../test/module/harness.ts";
import { getToken, jwkOf, median, modulePath, root } from "./common.ts";

const KEYS = Number(process.env.BENCH_VAULT_KEYS ?? 500);
const ROUNDS = Number(process.env.BENCH_VAULT_ROUNDS ?? 5);
/** Vault latency per data-plane response: requests are what a vault token could multiply, so they must cost. */
const LATENCY_MS = Number(process.env.BENCH_VAULT_LATENCY_MS ?? 20);
const PHASES = ["initialize", "session", "find", "sign"] as const;
/**
 * The module lists (and reads) in the background from C_Initialize on, so whether a request lands in session or in
 * find depends on timing; "untilFound" (initialize + session + find, summed per run) does not.
 */
const FIGURES = [...PHASES, "untilFound"] as const;
type Phase = (typeof PHASES)[number];
type Figure = (typeof FIGURES)[number];

const keyName = (i: number): string => `bench-vt-${String(i).padStart(4, "0")}`;
const digest = createHash("sha256").update("azure-keyvault-pkcs11 vault-token benchmark").digest();

interface RunFigures {
  ms: Record<Figure, number>;
  requests: Record<Figure, Record<string, number>>;
  signature: Buffer;
}

/** The child: one process, one module, the four phases, a line on stdout after each and one read from stdin. */
async function child(tokenLabel: string, label: string): Promise<void> {
  const { PKCS11 } = (await import("pkcs11js")).default;
  const p11 = new PKCS11();
  p11.load(modulePath);
  const pause = (phase: Phase, ms: number, extra: Record<string, string> = {}): void => {
    process.stdout.write(`${JSON.stringify({ phase, ms, ...extra })}\n`);
    const buffer = Buffer.alloc(1);
    if (readSync(0, buffer, 0, 1, null) !== 1) throw new Error("the benchmark went away");
  };
  const timed = <T>(action: () => T): [T, number] => {
    const start = performance.now();
    const value = action();
    return [value, performance.now() - start];
  };
  const [, initMs] = timed(() => p11.C_Initialize());
  pause("initialize", initMs);
  const [session, sessionMs] = timed(() => {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === tokenLabel);
    if (!slot) throw new Error(`no token labelled ${tokenLabel}`);
    return p11.C_OpenSession(slot, 4 /* CKF_SERIAL_SESSION */);
  });
  pause("session", sessionMs);
  const [key, findMs] = timed(() => {
    p11.C_FindObjectsInit(session, [{ type: 0x0 /* CKA_CLASS */, value: 3 /* CKO_PRIVATE_KEY */ }, { type: 0x3 /* CKA_LABEL */, value: label }]);
    const found = p11.C_FindObjects(session, 2);
    p11.C_FindObjectsFinal(session);
    if (found.length !== 1) throw new Error(`${found.length} private keys labelled ${label}`);
    return found[0]!;
  });
  pause("find", findMs);
  const [signature, signMs] = timed(() => {
    p11.C_SignInit(session, { mechanism: 0x1041 /* CKM_ECDSA */ }, key);
    return p11.C_Sign(session, digest, Buffer.alloc(132));
  });
  pause("sign", signMs, { signature: signature.toString("base64") });
  p11.C_CloseSession(session);
  p11.C_Finalize();
}

async function measure(env: NodeJS.ProcessEnv, tokenLabel: string, counts: () => Promise<Record<string, number>>): Promise<RunFigures> {
  const script = fileURLToPath(import.meta.url);
  const proc = spawn(process.execPath, ["--import", "tsx", script, "child", tokenLabel, keyName(Math.floor(KEYS / 2))], {
    env,
    cwd: root,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => proc.once("exit", resolve));
  const ms: Partial<Record<Phase, number>> = {};
  const requests: Partial<Record<Phase, Record<string, number>>> = {};
  let signature: Buffer | undefined;
  let before = await counts();
  const timer = setTimeout(() => proc.kill("SIGKILL"), 300_000);
  try {
    for await (const line of createInterface({ input: proc.stdout! })) {
      const report = JSON.parse(line) as { phase: Phase; ms: number; signature?: string };
      const now = await counts();
      ms[report.phase] = report.ms;
      requests[report.phase] = requestsSince(before, now);
      before = now;
      if (report.signature) signature = Buffer.from(report.signature, "base64");
      proc.stdin!.write("\n");
    }
  } finally {
    clearTimeout(timer);
  }
  const code = await exited;
  if (code !== 0 || !signature || PHASES.some((phase) => ms[phase] === undefined)) {
    throw new Error(`the ${tokenLabel} run exited with ${code} after phases ${Object.keys(ms).join(", ") || "none"}`);
  }
  const untilFound: Phase[] = ["initialize", "session", "find"];
  const sum: Record<string, number> = {};
  for (const phase of untilFound) for (const [operation, n] of Object.entries(requests[phase]!)) sum[operation] = (sum[operation] ?? 0) + n;
  return {
    ms: { ...(ms as Record<Phase, number>), untilFound: untilFound.reduce((total, phase) => total + ms[phase]!, 0) },
    requests: { ...(requests as Record<Phase, Record<string, number>>), untilFound: sum },
    signature,
  };
}

const total = (requests: Record<string, number>): number => Object.values(requests).reduce((sum, n) => sum + n, 0);

export interface VaultTokenResult {
  keys: number;
  latencyMs: number;
  rounds: number;
  perKey: { ms: Record<Figure, number>; requests: Record<Figure, Record<string, number>> };
  vaultToken: { ms: Record<Figure, number>; requests: Record<Figure, Record<string, number>> };
  /** The vault token's figure divided by the per-key slot's (null: the per-key slot made no request). */
  timeRatio: Record<Figure, number>;
  requestRatio: Record<Figure, number | null>;
}

export async function benchVaultToken(): Promise<VaultTokenResult> {
  if (!Number.isInteger(KEYS) || KEYS < 2) throw new Error(`BENCH_VAULT_KEYS must be a whole number >= 2, not ${KEYS}`);
  const spec = Array.from({ length: KEYS }, (_, i) => `${keyName(i)}:EC:P-256`).join(",");
  const emulator = await startEmulator({ keys: spec, latencyMs: LATENCY_MS });
  const dir = mkdtempSync(path.join(tmpdir(), "akv-bench-vault-"));
  try {
    const target = keyName(Math.floor(KEYS / 2));
    const configs = {
      perKey: { label: "bench-key", slot: { label: "bench-key", key_name: target, vault_url: emulator.url } },
      vaultToken: { label: "bench-vault", slot: { label: "bench-vault", vault_url: emulator.url } },
    };
    const envOf = (name: keyof typeof configs): NodeJS.ProcessEnv => {
      const file = path.join(dir, `${name}.json`);
      writeFileSync(file, JSON.stringify({ slots: [configs[name].slot] }));
      return {
        ...process.env,
        AZURE_KEYVAULT_PKCS11_CONFIG: file,
        AZURE_KEYVAULT_PKCS11_AGENT: "0",
        IDENTITY_ENDPOINT: emulator.identityEndpoint,
        IDENTITY_HEADER: emulator.identityHeader,
        NODE_EXTRA_CA_CERTS: emulator.caFile,
      };
    };
    const publicKey = createPublicKey({ key: await jwkOf(emulator, await getToken(emulator), target), format: "jwk" });
    const runs: Record<keyof typeof configs, RunFigures[]> = { perKey: [], vaultToken: [] };
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate which goes first, so that a swing in the machine's load hits both.
      const order = round % 2 === 0 ? (["perKey", "vaultToken"] as const) : (["vaultToken", "perKey"] as const);
      for (const name of order) {
        const figures = await measure(envOf(name), configs[name].label, () => emulator.requestCounts());
        if (!verify("sha256", Buffer.from("azure-keyvault-pkcs11 vault-token benchmark"), { key: publicKey, dsaEncoding: "ieee-p1363" }, figures.signature)) {
          throw new Error(`the ${name} run's signature does not verify against the vault's JWK of ${target}`);
        }
        runs[name].push(figures);
      }
    }
    const summarize = (list: RunFigures[]) => ({
      ms: Object.fromEntries(FIGURES.map((phase) => [phase, Number(median(list.map((r) => r.ms[phase])).toFixed(1))])) as Record<Figure, number>,
      // Request counts are the same in every round unless a retry or a background read crossed a phase boundary;
      // the median round's counts, by total.
      requests: Object.fromEntries(
        FIGURES.map((phase) => {
          const sorted = [...list].sort((a, b) => total(a.requests[phase]) - total(b.requests[phase]));
          return [phase, sorted[Math.floor(sorted.length / 2)]!.requests[phase]];
        }),
      ) as Record<Figure, Record<string, number>>,
    });
    const perKey = summarize(runs.perKey);
    const vaultToken = summarize(runs.vaultToken);
    return {
      keys: KEYS,
      latencyMs: LATENCY_MS,
      rounds: ROUNDS,
      perKey,
      vaultToken,
      timeRatio: Object.fromEntries(FIGURES.map((phase) => [phase, Number((vaultToken.ms[phase] / perKey.ms[phase]).toFixed(2))])) as Record<Figure, number>,
      requestRatio: Object.fromEntries(
        FIGURES.map((phase) => {
          const base = total(perKey.requests[phase]);
          return [phase, base === 0 ? null : Number((total(vaultToken.requests[phase]) / base).toFixed(2))];
        }),
      ) as Record<Figure, number | null>,
    };
  } finally {
    await emulator.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printVaultTokenSummary(result: VaultTokenResult): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  const describeRequests = (requests: Record<string, number>): string =>
    total(requests) === 0 ? "0" : `${total(requests)} (${Object.entries(requests).map(([op, n]) => `${op} ${n}`).join(", ")})`;
  const lines = FIGURES.map(
    (phase) =>
      `  ${phase}: per-key slot ${result.perKey.ms[phase]} ms, ${describeRequests(result.perKey.requests[phase])} requests; ` +
      `vault token ${result.vaultToken.ms[phase]} ms, ${describeRequests(result.vaultToken.requests[phase])} requests; ` +
      `ratio ${result.timeRatio[phase]}x time, ${result.requestRatio[phase] === null ? "the per-key slot made no request" : `${result.requestRatio[phase]}x requests`}`,
  );
  process.stdout.write(`\nvault token, ${result.keys} keys at ${result.latencyMs} ms (medians of ${result.rounds} runs each):\n${lines.join("\n")}\n`);
}

if (process.argv[2] === "child" && process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await child(process.argv[3]!, process.argv[4]!);
}
