// Injected faults: 429 with Retry-After, 503, dropped connections, stalls; limited to some operations; replaced at run
// time; deterministic for a seed; the SDK's own retries ride through a faulty emulator; --latency-ms delays responses.
import test from "ava";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { parseEmulatorArgs } from "../../src/emulator/cli.ts";
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

/** Status of each of `count` sequential raw GETs (of the key, or of `path`); 0 for a dropped connection. */
async function statuses(emulator: TestEmulator, count: number, path = "/keys/signer"): Promise<number[]> {
  const token = await managedIdentityToken(emulator);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    try {
      out.push((await get(emulator, token, path)).status);
    } catch (error) {
      t_assertDropped(error);
      out.push(0);
    }
  }
  return out;
}
function get(emulator: TestEmulator, token: string, path: string) {
  return raw(`${emulator.url}${path}?api-version=2025-07-01`, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
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

test("stallRate 1: each request is held for stallMs, then answered normally", async (t) => {
  const emulator = await emulatorWith({ faults: { stallRate: 1, stallMs: 300 } });
  const token = await managedIdentityToken(emulator);
  const start = performance.now();
  const res = await get(emulator, token, "/keys/signer");
  // A lower bound only, as for latencyMs: the stall is a timer, so the answer can never come sooner.
  t.true(performance.now() - start >= 299);
  t.is(res.status, 200);
  t.is(res.json.key.kty, "EC");
});

test("operations: only requests of the listed operations are faulted", async (t) => {
  const emulator = await emulatorWith({ certs: ["signer"], faults: { unavailableRate: 1, operations: ["get-certificate", "sign"] } });
  const token = await managedIdentityToken(emulator);
  t.is((await get(emulator, token, "/keys/signer")).status, 200);
  t.is((await get(emulator, token, "/keys")).status, 200);
  t.is((await get(emulator, token, "/certificates/signer")).status, 503);
  t.is((await get(emulator, token, "/certificates/signer/policy")).status, 200);
  const sign = await raw(`${emulator.url}/keys/signer//sign?api-version=2025-07-01`, {
    method: "POST",
    ca: emulator.caPem,
    headers: { authorization: `Bearer ${token}` },
    body: { alg: "ES256", value: randomBytes(32).toString("base64url") },
  });
  t.is(sign.status, 503);
});

test("operations: requests of other operations draw nothing, so the faulted ones see the seed's sequence", async (t) => {
  const faults = { unavailableRate: 0.5, seed: 11, operations: ["get-certificate"] };
  const [alone, mixed] = await Promise.all([emulatorWith({ certs: ["signer"], faults }), emulatorWith({ certs: ["signer"], faults })]);
  const expected = await statuses(alone, 20, "/certificates/signer");
  const token = await managedIdentityToken(mixed);
  const seen: number[] = [];
  for (let i = 0; i < 20; i++) {
    t.is((await get(mixed, token, "/keys/signer")).status, 200);
    seen.push((await get(mixed, token, "/certificates/signer")).status);
  }
  t.deepEqual(seen, expected);
  t.true(expected.includes(200) && expected.includes(503));
});

test("setFaults replaces the faults at run time; undefined clears them; bad options keep the old ones", async (t) => {
  const emulator = await emulatorWith({});
  const token = await managedIdentityToken(emulator);
  t.is((await get(emulator, token, "/keys/signer")).status, 200);
  emulator.setFaults({ unavailableRate: 1 });
  t.is((await get(emulator, token, "/keys/signer")).status, 503);
  t.throws(() => emulator.setFaults({ stallRate: 2 }), { message: /stallRate must be between 0 and 1/ });
  t.throws(() => emulator.setFaults({ dropRate: 1, operations: ["get-cert"] }), { message: /unknown operation\(s\) 'get-cert'/ });
  t.is((await get(emulator, token, "/keys/signer")).status, 503, "the faults before the refused call still apply");
  emulator.setFaults({ dropRate: 1, operations: ["get-key"] });
  t.deepEqual(await statuses(emulator, 2), [0, 0]);
  t.is((await get(emulator, token, "/keys")).status, 200);
  emulator.setFaults(undefined);
  t.deepEqual(await statuses(emulator, 3), [200, 200, 200]);
});

test("setFaults does not release a request already held by a stall; new requests see the new faults", async (t) => {
  const emulator = await emulatorWith({ faults: { stallRate: 1, stallMs: 3000 } });
  const token = await managedIdentityToken(emulator);
  const counted = emulator.requestCounts("signer")["get-key"] ?? 0;
  const held = get(emulator, token, "/keys/signer");
  let heldSettled = false;
  void held.finally(() => (heldSettled = true));
  // Bounded wait until the held request has arrived (and drawn its stall) before the faults change.
  for (let i = 0; i < 200 && (emulator.requestCounts("signer")["get-key"] ?? 0) === counted; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(emulator.requestCounts("signer")["get-key"], counted + 1);
  emulator.setFaults(undefined);
  t.is((await get(emulator, token, "/keys/signer")).status, 200);
  t.false(heldSettled, "the stalled request is still held");
  t.is((await held).status, 200);
});

test("fault options are validated", async (t) => {
  await t.throwsAsync(startTestEmulator({ faults: { throttleRate: 1.5 } }), { message: /between 0 and 1/ });
  await t.throwsAsync(startTestEmulator({ faults: { throttleRate: 0.6, dropRate: 0.6 } }), { message: /more than 1/ });
  await t.throwsAsync(startTestEmulator({ faults: { stallRate: 0.5, unavailableRate: 0.6 } }), { message: /more than 1/ });
  await t.throwsAsync(startTestEmulator({ faults: { stallRate: 0.5, stallMs: -1 } }), { message: /stallMs must be a whole number/ });
  await t.throwsAsync(startTestEmulator({ faults: { dropRate: 0.5, operations: ["sign", "Sign"] } }), { message: /unknown operation\(s\) 'Sign'/ });
});

test("CLI: --stall-rate, --stall-ms and --fault-operations", (t) => {
  const options = parseEmulatorArgs(["--stall-rate", "0.25", "--stall-ms", "4000", "--fault-operations", "sign, get-certificate", "--drop-rate", "0.1"]);
  t.deepEqual(options, { faults: { stallRate: 0.25, stallMs: 4000, dropRate: 0.1, operations: ["sign", "get-certificate"] } });
  t.throws(() => parseEmulatorArgs(["--stall-ms", "1.5"]), { message: /--stall-ms: '1.5' is not a whole number/ });
});
