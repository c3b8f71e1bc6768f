// requestCounts(): every data-plane request is counted once under its operation's name when it arrives, whether
// it succeeds, is refused or is hit by an injected fault; identity-provider requests are not data-plane requests.
import test from "ava";
import { createHash } from "node:crypto";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw } from "./raw.ts";

const API = "api-version=7.4";
const started: TestEmulator[] = [];
test.after.always(async () => {
  await Promise.all(started.map((e) => e.close()));
});

async function emulatorWith(options: Parameters<typeof startTestEmulator>[0]): Promise<{ emulator: TestEmulator; call: (method: string, path: string, body?: object) => Promise<number> }> {
  const emulator = await startTestEmulator(options);
  started.push(emulator);
  const token = await managedIdentityToken(emulator);
  const call = async (method: string, path: string, body?: object): Promise<number> => {
    try {
      const res = await raw(`${emulator.url}${path}`, { method, body, ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
      return res.status;
    } catch {
      return 0;
    }
  };
  return { emulator, call };
}

test("each REST operation is counted under its own name", async (t) => {
  const { emulator, call } = await emulatorWith({ keys: "signer:RSA:2048,ec:EC:P-256", certs: ["signer"] });
  t.deepEqual(emulator.requestCounts(), {});
  const digest = createHash("sha256").update("counted").digest().toString("base64url");
  const expected: Array<[string, string, number, object?]> = [
    ["GET", `/keys/signer?${API}`, 200],
    ["GET", `/keys/signer/?${API}`, 200],
    ["GET", `/keys?${API}`, 200],
    ["GET", `/keys/signer/versions?${API}`, 200],
    ["POST", `/keys/signer//sign?${API}`, 200, { alg: "RS256", value: digest }],
    ["POST", `/keys/ec//sign?${API}`, 200, { alg: "ES256", value: digest }],
    ["POST", `/keys/signer//encrypt?${API}`, 200, { alg: "RSA-OAEP", value: Buffer.from("x").toString("base64url") }],
    ["GET", `/certificates/signer?${API}`, 200],
    ["GET", `/certificates/ec?${API}`, 404],
    ["POST", `/keys/made/create?${API}`, 200, { kty: "EC", crv: "P-256" }],
    ["POST", `/rng?${API}`, 200, { count: 8 }],
  ];
  for (const [method, path, status, body] of expected) t.is(await call(method, path, body), status, `${method} ${path}`);
  t.deepEqual(emulator.requestCounts(), {
    "get-key": 2,
    "list-keys": 1,
    "list-key-versions": 1,
    sign: 2,
    encrypt: 1,
    "get-certificate": 2,
    "create-key": 1,
    "get-random-bytes": 1,
  });
  t.deepEqual(emulator.requestCounts("SIGNER"), { "get-key": 2, "list-key-versions": 1, sign: 1, encrypt: 1, "get-certificate": 1 });
  t.deepEqual(emulator.requestCounts("ec"), { sign: 1, "get-certificate": 1 });
  t.deepEqual(emulator.requestCounts("made"), { "create-key": 1 });
  t.deepEqual(emulator.requestCounts("never-named"), {});
  // A copy: changing it does not change the emulator's counts.
  const snapshot = emulator.requestCounts();
  snapshot.sign = 100;
  t.is(emulator.requestCounts().sign, 2);
});

test("refused requests count; identity-provider requests do not", async (t) => {
  const { emulator, call } = await emulatorWith({ keys: "signer:EC:P-256" });
  t.is(await call("GET", `/keys/missing?${API}`), 404);
  t.is(await call("GET", `/keys/signer`), 400);
  const unauthenticated = await raw(`${emulator.url}/keys/signer?${API}`, { ca: emulator.caPem });
  t.is(unauthenticated.status, 401);
  const discovery = await raw(`${emulator.url}/${emulator.tenantId}/v2.0/.well-known/openid-configuration`, { ca: emulator.caPem });
  t.is(discovery.status, 200);
  t.deepEqual(emulator.requestCounts(), { "get-key": 3 });
});

test("requests hit by an injected fault are counted", async (t) => {
  const { emulator, call } = await emulatorWith({ keys: "signer:EC:P-256", faults: { unavailableRate: 1 } });
  t.is(await call("GET", `/keys/signer?${API}`), 503);
  t.is(await call("POST", `/keys/signer//sign?${API}`, { alg: "ES256", value: "AA" }), 503);
  t.deepEqual(emulator.requestCounts(), { "get-key": 1, sign: 1 });
});
