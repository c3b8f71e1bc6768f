// Runs the PKCS#11 API fuzzer (api-fuzz.c) against build/azure-keyvault-pkcs11.so, the real helper and the
// emulator, for a fixed set of seeds. The fuzzer judges every call itself (see the top of api-fuzz.c) and exits 1
// with the seed and call index at the first violation; this test also reads the helper's log (the host's stderr).
// A longer run: AKV_FUZZ_SEEDS=1-50 AKV_FUZZ_CALLS=20000 npx ava test/fuzz/api-fuzz.test.ts
import test, { type ExecutionContext } from "ava";
import { execFile } from "node:child_process";
import path from "node:path";
import { compileDriver, keyValues, onlyDriverLines } from "../native/driver.ts";
import { modulePath, repoRoot, startModuleFixture, type ModuleFixture } from "../module/harness.ts";

function seedList(spec: string): number[] {
  const [from, to] = spec.split("-").map(Number);
  const seeds: number[] = [];
  for (let seed = from!; seed <= (to ?? from!); seed++) seeds.push(seed);
  return seeds;
}

const SEEDS = seedList(process.env.AKV_FUZZ_SEEDS ?? "1-3");
const CALLS = Number(process.env.AKV_FUZZ_CALLS ?? 2000);
/** Inputs and outputs past the 64 MiB frame limit need one buffer of each this size; only the first seed uses them. */
const BIG_MIB = 65;

// Return values PKCS#11 does not list for the function, seen and reported (test/fuzz/README.md has them with
// their seeds); accepted here until the shim or the helper changes, so that the fuzzer still stops at new ones.
const KNOWN_DEVIATIONS = [
  // The helper: CKU_CONTEXT_SPECIFIC with nobody logged in (src/session/sessions.ts).
  "C_Login:0x101", "C_LoginUser:0x101",
  // The helper: a single-part call after an Update of the same operation (src/session/operations.ts).
  "C_Sign:0x90", "C_Verify:0x90", "C_Digest:0x90",
];

// Lines the helper writes only when something is wrong with it rather than with the caller's arguments.
const HELPER_FAULTS = /internal error|uncaught exception|unhandled rejection|malformed request|protocol error|cannot encode/;

let fixture: ModuleFixture;
let fuzzer: string;
test.before(async () => {
  fixture = await startModuleFixture({
    keys: "fz-rsa:RSA:2048,fz-ec:EC:P-256",
    certs: ["fz-rsa"],
    // A configured key the vault does not hold: an empty token that C_GenerateKeyPair may fill.
    extraSlots: [{ key_name: "fz-missing", label: "fz-missing" }],
    skipInitialize: true,
  });
  fuzzer = compileDriver(path.join(repoRoot, "test", "fuzz", "api-fuzz.c"), ["-I", path.join(repoRoot, "native")]);
});
test.after.always(() => fixture?.close());

function runFuzzer(seed: number, bigMib: number, env: NodeJS.ProcessEnv): Promise<{ code: number | string; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // The fuzzer reports a call that hangs itself (exit 3, after 60 s); this timeout only guards against worse.
    execFile(fuzzer, [modulePath, String(seed), String(CALLS), String(bigMib), ...KNOWN_DEVIATIONS], { env, timeout: 300_000, encoding: "utf8", maxBuffer: 64 << 20 },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === "number" ? error.code : `${error.signal}`) : 0, stdout, stderr }));
  });
}

async function fuzz(t: ExecutionContext, seed: number, bigMib: number, kills: boolean): Promise<Map<string, string>> {
  // Under the sanitizers on a loaded machine a seed takes up to a minute or two.
  t.timeout(300_000);
  const env = { ...process.env, AKV_FUZZ_KILLS: kills ? "1" : undefined };
  const { code, stdout, stderr } = await runFuzzer(seed, bigMib, env);
  const values = keyValues(stdout);
  t.log(values.get("summary") ?? `seed ${seed}: no summary`);
  const report = stderr.slice(Math.max(0, stderr.search(/^(VIOLATION|HANG) /m)));
  t.is(code, 0, `seed ${seed}:\n${stdout}\n${report.split("\n").slice(-60).join("\n")}`);
  t.is(values.get("violations"), "0", stdout);
  // A kill is a step of its own, without a PKCS#11 call.
  t.true(Number(values.get("calls")) >= CALLS - Number(values.get("respawn.kills") ?? 0), stdout);
  // Enough different outcomes that the calls reached the helper's checks, not only the shim's.
  t.true(Number(values.get("rvs")) >= 15, stdout);
  t.true(Number(values.get("rv.0x0")) > CALLS / 10, `too few successful calls:\n${stdout}`);
  if (bigMib > 0) {
    // Inputs just under the 64 MiB frame limit reached the helper, and inputs past it were refused by the shim.
    t.true(Number(values.get("inputs.nearLimit")) >= 1 && Number(values.get("inputs.pastLimit")) >= 1, stdout);
  }
  // Operations got past Init: a signature was made (the vault's work), not only argument checks.
  t.true(Number(values.get("ok.Sign") ?? 0) + Number(values.get("ok.SignFinal") ?? 0) >= 1, `no successful signature:\n${stdout}`);
  t.true(onlyDriverLines(stdout), "nothing but the fuzzer's lines on stdout");
  const faults = stderr.split("\n").filter((line) => HELPER_FAULTS.test(line));
  t.deepEqual(faults, [], `seed ${seed}: the helper logged faults`);
  return values;
}

for (const [index, seed] of SEEDS.entries()) {
  test.serial(`seed ${seed}: random PKCS#11 call sequences keep every rule of the spec and of docs/protocol.md`, async (t) => {
    await fuzz(t, seed, index === 0 ? BIG_MIB : 0, false);
  });
}

// The helper SIGKILLed now and then: the shim replaces it at the next call and hands it the open sessions, so the
// application sees one module. (This found the replacement handing out session handles the application had closed
// before the kill: seed 1, call 554; fixed by RestoreSessions carrying the highest handle ever handed out.)
test.serial("seed 1 with the helper killed now and then: sessions survive the replacement, closed ones stay closed", async (t) => {
  const values = await fuzz(t, SEEDS[0]!, 0, true);
  t.true(Number(values.get("respawn.kills")) >= 1);
});

// A vault token beside the per-key slots: the random calls list, make, rename and destroy keys and certificates in
// the vault (a fixture of its own, so that the seeds above keep their sequences). Seed 2 also reaches signatures.
test.serial("seed 2 with a vault token: keys made, renamed and destroyed by random calls keep every rule", async (t) => {
  const vaultFixture = await startModuleFixture({
    keys: "fz-rsa:RSA:2048,fz-ec:EC:P-256",
    certs: ["fz-rsa"],
    extraSlots: [{ key_name: "fz-missing", label: "fz-missing" }, { label: "fz-vault" }],
    skipInitialize: true,
  });
  try {
    await fuzz(t, 2, 0, false);
  } finally {
    await vaultFixture.close();
  }
});
