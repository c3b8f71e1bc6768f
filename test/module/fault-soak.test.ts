// Concurrent signers on RSA and EC tokens through 429s, 503s, dropped connections and stalls longer than the
// module's deadline, all at once: every CKR_OK signature verifies against the vault's JWK, every failure is
// CKR_DEVICE_ERROR (what src/token/vault-errors.ts maps throttling, 5xx, network errors and timeouts to), and no
// call outlives a watchdog of three deadlines (a hang detector, not a performance assertion). First, one sign held
// past the deadline on its own.
import test from "ava";
import { constants, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { openSession, privateKeyOf, rvOfAsync, startModuleFixture, type Handle, type ModuleFixture } from "./harness.ts";

const DEADLINE_MS = 1500;
const WATCHDOG_MS = 3 * DEADLINE_MS;
const SIGNERS = 8;
const ROUNDS = 12;
// Stalls outlast the deadline; a 1 s Retry-After fits in it, so the SDK waits and retries.
const FAULTS = { throttleRate: 0.1, unavailableRate: 0.1, dropRate: 0.1, stallRate: 0.05, stallMs: 2 * DEADLINE_MS + 1000, retryAfterSeconds: 1, seed: 2026 };

let fixture: ModuleFixture;
test.before(async () => {
  // The helper reads it at C_Initialize, which startModuleFixture calls.
  process.env.AZURE_KEYVAULT_PKCS11_TIMEOUT_MS = String(DEADLINE_MS);
  fixture = await startModuleFixture({ keys: "rsa:RSA:2048,ec:EC:P-256" });
});
test.after.always(async () => {
  delete process.env.AZURE_KEYVAULT_PKCS11_TIMEOUT_MS;
  await fixture?.close();
});

type Outcome = "ok" | number | "hang";

interface Signer {
  keyName: "rsa" | "ec";
  session: Handle;
  key: Handle;
}

function verifies(keyName: "rsa" | "ec", data: Buffer, signature: Buffer): boolean {
  const key = fixture.key(keyName).publicKey;
  return verify("sha256", data, keyName === "rsa" ? { key, padding: constants.RSA_PKCS1_PADDING } : { key, dsaEncoding: "ieee-p1363" }, signature);
}

/** One C_SignInit + C_SignAsync, raced against the watchdog. */
async function signOnce(signer: Signer, data: Buffer): Promise<{ outcome: Outcome; signature?: Buffer }> {
  const { pkcs11 } = fixture;
  pkcs11.C_SignInit(signer.session, { mechanism: signer.keyName === "rsa" ? pkcs11js.CKM_SHA256_RSA_PKCS : pkcs11js.CKM_ECDSA_SHA256 }, signer.key);
  let signature: Buffer | undefined;
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<"hang">((resolve) => (timer = setTimeout(() => resolve("hang"), WATCHDOG_MS)));
  const call = rvOfAsync(async () => {
    signature = await pkcs11.C_SignAsync(signer.session, data, Buffer.alloc(512));
  });
  const outcome = await Promise.race([call, watchdog]);
  clearTimeout(timer);
  return { outcome, signature };
}

test.serial("a sign held past the deadline returns CKR_DEVICE_ERROR before the stall ends; the next one signs", async (t) => {
  const { pkcs11, emulator } = fixture;
  const session = openSession(fixture, "ec");
  const signer: Signer = { keyName: "ec", session, key: privateKeyOf(fixture, session) };
  await emulator.setFaults({ stallRate: 1, stallMs: WATCHDOG_MS + 5000, operations: ["sign"] });
  // The watchdog (three deadlines) is shorter than the stall: only the module's own deadline can end the call.
  t.is((await signOnce(signer, Buffer.from("stalled"))).outcome, pkcs11js.CKR_DEVICE_ERROR);
  await emulator.setFaults(undefined);
  const data = Buffer.from("after the stall");
  const { outcome, signature } = await signOnce(signer, data);
  t.is(outcome, "ok");
  t.true(signature !== undefined && verifies("ec", data, signature));
  pkcs11.C_CloseSession(session);
});

test.serial("concurrent signers through 429, 503, dropped connections and stalls: valid signatures or CKR_DEVICE_ERROR, no hang", async (t) => {
  const { pkcs11, emulator } = fixture;
  const signers: Signer[] = Array.from({ length: SIGNERS }, (_, index) => {
    const keyName = index % 2 === 0 ? "rsa" : "ec";
    const session = openSession(fixture, keyName);
    // Found (and the key loaded) before the faults start: the soak is about signing.
    return { keyName, session, key: privateKeyOf(fixture, session) };
  });
  const signsBefore = (await emulator.requestCounts()).sign ?? 0;
  await emulator.setFaults(FAULTS);

  const mix = new Map<string, number>();
  const count = (name: string) => mix.set(name, (mix.get(name) ?? 0) + 1);
  const problems: string[] = [];
  await Promise.all(
    signers.map(async (signer, index) => {
      for (let round = 0; round < ROUNDS; round++) {
        const data = Buffer.from(`signer ${index} round ${round}`);
        const { outcome, signature } = await signOnce(signer, data);
        if (outcome === "hang") {
          problems.push(`signer ${index} round ${round}: no answer within ${WATCHDOG_MS} ms`);
          count("hang");
          return; // the session still has a call in flight
        }
        if (outcome === "ok") {
          count("CKR_OK");
          if (!signature || !verifies(signer.keyName, data, signature)) problems.push(`signer ${index} round ${round}: CKR_OK but the signature does not verify`);
        } else {
          count(outcome === pkcs11js.CKR_DEVICE_ERROR ? "CKR_DEVICE_ERROR" : `rv 0x${outcome.toString(16)}`);
          if (outcome !== pkcs11js.CKR_DEVICE_ERROR) problems.push(`signer ${index} round ${round}: rv 0x${outcome.toString(16)}, expected CKR_DEVICE_ERROR`);
        }
      }
    }),
  );
  await emulator.setFaults(undefined);
  const signRequests = ((await emulator.requestCounts()).sign ?? 0) - signsBefore;
  t.log(`${SIGNERS * ROUNDS} signatures: ${[...mix].map(([name, n]) => `${name} ${n}`).join(", ")}; ${signRequests} sign requests reached the emulator`);

  t.deepEqual(problems, []);
  t.true((mix.get("CKR_OK") ?? 0) > 0, "some signatures got through");
  t.true(signRequests > SIGNERS * ROUNDS, "faults made the SDK retry, so the soak went through them");

  // Once the faults stop, every session signs again.
  for (const [index, signer] of signers.entries()) {
    const data = Buffer.from(`after the faults, signer ${index}`);
    const { outcome, signature } = await signOnce(signer, data);
    t.is(outcome, "ok", `signer ${index} after the faults`);
    t.true(signature !== undefined && verifies(signer.keyName, data, signature), `signer ${index} after the faults`);
    pkcs11.C_CloseSession(signer.session);
  }
});
