// Injected faults: 429 with Retry-After, 503, dropped connections; deterministic for a seed; the SDK's own retries
// ride through a faulty emulator; --latency-ms delays responses.
import test from "ava";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw } from "./raw.ts";

const started: TestEmulator[] = [];
async function emulatorWith(options: Parameters<typeof startTestEmulator>[0]): Promise<TestEmulator> {
  const emulator = await startTestEmulator({ keys: "signer:EC:P-256", ...options });
  started.push(emulator);
  return emulator;
}
test.after.always(async () => {
  await Promise.all(started.map((e) => e.close()));
});

/** Status of each of `count` sequential raw GETs; 0 for a dropped connection. */
async function statuses(emulator: TestEmulator, count: number): Promise<number[]> {
  const token = await managedIdentityToken(emulator);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const res = await raw(`${emulator.url}/keys/signer?api-version=2025-07-01`, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
      out.push(res.status);
    } catch (error) {
      t_assertDropped(error);
      out.push(0);
    }
  }
  return out;
}
function t_assertDropped(error: unknown): void {
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== "ECONNRESET" && !/socket hang up/.test(String(error))) throw error;
}

test("throttleRate 1: every data-plane request gets 429 Throttled with Retry-After", async (t) => {
  const emulator = await emulatorWith({ faults: { throttleRate: 1, retryAfterSeconds: 7 } });
  const res = await raw(`${emulator.url}/keys/signer?api-version=2025-07-01`, { ca: emulator.caPem });
  t.is(res.status, 429);
  t.is(res.headers["retry-after"], "7");
  t.is(res.json.error.code, "Throttled");
  // Token endpoints are not the vault and are never throttled.
  t.truthy(await managedIdentityToken(emulator));
});

test("unavailableRate 1: 503; dropRate 1: the connection is dropped", async (t) => {
  const unavailable = await emulatorWith({ faults: { unavailableRate: 1 } });
  t.deepEqual(await statuses(unavailable, 3), [503, 503, 503]);
  const dropping = await emulatorWith({ faults: { dropRate: 1 } });
  t.deepEqual(await statuses(dropping, 3), [0, 0, 0]);
});

test("the same seed gives the same fault sequence; another seed a different one", async (t) => {
  const faults = { throttleRate: 0.2, unavailableRate: 0.2, dropRate: 0.2, seed: 42 };
  const [a, b, c] = await Promise.all([emulatorWith({ faults }), emulatorWith({ faults }), emulatorWith({ faults: { ...faults, seed: 43 } })]);
  const [sa, sb, sc] = [await statuses(a, 40), await statuses(b, 40), await statuses(c, 40)];
  t.deepEqual(sa, sb);
  t.notDeepEqual(sa, sc);
  for (const status of [200, 429, 503, 0]) t.true(sa.includes(status), `sequence contains ${status}`);
});

test("the SDK retries through 429, 503 and dropped connections and still gets valid signatures", async (t) => {
  const emulator = await emulatorWith({ faults: { throttleRate: 0.15, unavailableRate: 0.15, dropRate: 0.1, retryAfterSeconds: 0, seed: 7 } });
  const options = { ...emulator.clientOptions, retryOptions: { maxRetries: 10, retryDelayInMs: 5, maxRetryDelayInMs: 50 } };
  const key = await new KeyClient(emulator.url, emulator.credential(), options).getKey("signer");
  const publicKey = createPublicKey({ key: { kty: "EC", crv: "P-256", x: Buffer.from(key.key!.x!).toString("base64url"), y: Buffer.from(key.key!.y!).toString("base64url") }, format: "jwk" });
  const crypto = new CryptographyClient(key.id!, emulator.credential(), options);
  for (let i = 0; i < 15; i++) {
    const message = randomBytes(40);
    const { result } = await crypto.sign("ES256", createHash("sha256").update(message).digest());
    t.true(verify("sha256", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, result));
  }
});

test("latencyMs delays data-plane responses by at least that much", async (t) => {
  const emulator = await emulatorWith({ latencyMs: 150 });
  const token = await managedIdentityToken(emulator);
  const start = performance.now();
  const res = await raw(`${emulator.url}/keys/signer?api-version=2025-07-01`, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
  // A lower bound only: the delay is a timer, so the response can never come sooner.
  t.is(res.status, 200);
  t.true(performance.now() - start >= 149);
});

test("fault options are validated", async (t) => {
  await t.throwsAsync(startTestEmulator({ faults: { throttleRate: 1.5 } }), { message: /between 0 and 1/ });
  await t.throwsAsync(startTestEmulator({ faults: { throttleRate: 0.6, dropRate: 0.6 } }), { message: /more than 1/ });
});
