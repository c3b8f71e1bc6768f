// `doctor` on a Managed HSM AES key (docs/aes.md): its state, usage and size (probed as the token does), and a real
// A*CBCPAD round trip in the HSM; a key whose key_ops forbid every AES use fails with the fix.
import test from "ava";
import path from "node:path";
import { mkdtemp, writeFile } from "node:fs/promises";
import { repoRoot, startModuleFixture, type ModuleFixture } from "../module/harness.ts";
import { describe, run } from "../clients/process.ts";
import type { CheckResult } from "../../src/doctor/report.ts";

const cli = path.join(repoRoot, "build", "cli.cjs");
let fixture: ModuleFixture;

test.before(async () => {
  fixture = await startModuleFixture({
    keys: "aes256:oct-HSM:256,aes128:oct-HSM:128",
    managedHsm: true,
    skipInitialize: true,
    prepare: async (_emulator, { vaultPost }) => {
      const made = await vaultPost("/keys/sign-only/create?api-version=7.4", { kty: "oct-HSM", key_size: 256, key_ops: ["sign"] });
      if (made.status !== 200) throw new Error(`create sign-only: ${made.status} ${JSON.stringify(made.body)}`);
      return ["sign-only"];
    },
  });
});
test.after.always(() => fixture?.close());

async function doctor(slots: unknown[]): Promise<{ checks: CheckResult[]; code: number | null; text: string }> {
  const home = await mkdtemp(path.join(fixture.dir, "home-"));
  const configPath = path.join(home, "config.json");
  await writeFile(configPath, JSON.stringify({ slots }));
  const result = await run(process.execPath, [cli, "doctor", "--json"], { env: { ...process.env, HOME: home, AZURE_KEYVAULT_PKCS11_CONFIG: configPath }, timeoutMs: 90_000 });
  return { checks: JSON.parse(result.stdout) as CheckResult[], code: result.code, text: describe(result) };
}

test("an AES key: found with its probed size, and a round trip in the HSM", async (t) => {
  const { checks, text } = await doctor([{ key_name: "aes256", label: "aes256", vault_url: fixture.emulator.url }, { key_name: "aes128", label: "aes128", vault_url: fixture.emulator.url }]);
  for (const [label, bits] of [["aes256", 256], ["aes128", 128]] as const) {
    const key = checks.find((check) => check.check === "key" && check.slot === label);
    t.is(key?.verdict, "ok", text);
    t.regex(key?.detail ?? "", new RegExp(`a ${bits}-bit AES key`), text);
    const aes = checks.find((check) => check.check === "aes" && check.slot === label);
    t.is(aes?.verdict, "ok", text);
    t.regex(aes?.detail ?? "", new RegExp(`A${bits}CBCPAD and decrypted them back`), text);
  }
});

test("an AES key that may only sign fails key_ops with the fix", async (t) => {
  const { checks, code, text } = await doctor([{ key_name: "sign-only", label: "sign-only", vault_url: fixture.emulator.url }]);
  const ops = checks.find((check) => check.check === "key_ops" && check.slot === "sign-only");
  t.is(ops?.verdict, "FAIL", text);
  t.regex(ops?.fix ?? "", /--ops encrypt decrypt wrapKey unwrapKey/, text);
  t.is(code, 1, text);
});
