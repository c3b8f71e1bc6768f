// Key import (PUT /keys/{name}) and tags, through the real KeyClient and raw HTTPS: the imported private key signs
// what node:crypto verifies with the caller's own public key, the bundle never carries private members, and a JWK
// whose members do not belong together is 400 BadParameter.
import test from "ava";
import { createHash, createPublicKey, generateKeyPairSync, verify, type JsonWebKey } from "node:crypto";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { dataPlane, managedIdentityToken, raw, type RawResponse } from "./raw.ts";

let emulator: TestEmulator;
let keys: KeyClient;
let token: string;

test.before(async () => {
  emulator = await startTestEmulator({ keys: "existing:EC:P-256" });
  keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
  token = await managedIdentityToken(emulator);
});
test.after.always(() => emulator?.close());

// The emulator is started in test.before; the client reads it (and the token) at each call.
const client = () => dataPlane(emulator, () => token);
const call = (method: string, path: string, body?: object): Promise<RawResponse> => client().call(method, path, body);
const listAll = (path: string) => client().listAll(path);

const rsaJwk = (): JsonWebKey => generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });
const ecJwk = (namedCurve: string): JsonWebKey => generateKeyPairSync("ec", { namedCurve }).privateKey.export({ format: "jwk" });
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k"];

test("an imported RSA key signs what node:crypto verifies with the caller's public key; no private member comes back", async (t) => {
  const jwk = rsaJwk();
  const res = await call("PUT", "/keys/imported-rsa", { key: { ...jwk, key_ops: ["sign", "verify"] }, tags: { p11_pri_CKA_LABEL: "imported" } });
  t.is(res.status, 200, res.text);
  t.is(res.json.key.kty, "RSA");
  t.is(res.json.key.n, jwk.n);
  t.is(res.json.key.e, jwk.e);
  t.deepEqual(res.json.key.key_ops, ["sign", "verify"]);
  t.deepEqual(res.json.tags, { p11_pri_CKA_LABEL: "imported" });
  for (const member of PRIVATE_MEMBERS) t.false(member in res.json.key, `no '${member}' in the bundle`);

  const digest = createHash("sha256").update("imported").digest();
  const crypto = new CryptographyClient(res.json.key.kid, emulator.credential(), emulator.clientOptions);
  const signature = Buffer.from((await crypto.sign("RS256", digest)).result);
  t.true(verify("sha256", Buffer.from("imported"), createPublicKey({ key: jwk, format: "jwk" }), signature));
});

test("an imported EC key (P-384) signs ES384 that node:crypto verifies; KeyClient.importKey with hsm gives EC-HSM", async (t) => {
  const jwk = ecJwk("secp384r1");
  const imported = await keys.importKey("imported-ec", { kty: "EC", crv: "P-384", x: Buffer.from(jwk.x!, "base64url"), y: Buffer.from(jwk.y!, "base64url"), d: Buffer.from(jwk.d!, "base64url") }, { hardwareProtected: true });
  t.is(imported.keyType, "EC-HSM");
  t.is(imported.key!.d, undefined);
  const digest = createHash("sha384").update("ec").digest();
  const crypto = new CryptographyClient(imported.id!, emulator.credential(), emulator.clientOptions);
  const signature = Buffer.from((await crypto.sign("ES384", digest)).result);
  t.true(verify("sha384", Buffer.from("ec"), { key: createPublicKey({ key: jwk, format: "jwk" }), dsaEncoding: "ieee-p1363" }, signature));
});

test("import on an existing name adds a version, as the service does", async (t) => {
  const before = await keys.getKey("existing");
  const jwk = ecJwk("prime256v1");
  const res = await call("PUT", "/keys/existing", { key: jwk });
  t.is(res.status, 200);
  const after = await keys.getKey("existing");
  t.not(after.properties.version, before.properties.version);
  t.is(Buffer.from(after.key!.x!).toString("base64url"), jwk.x!);
  t.is((await keys.getKey("existing", { version: before.properties.version! })).properties.version, before.properties.version);
});

test("a JWK whose members do not belong together, or that lacks its private part, is 400 BadParameter", async (t) => {
  const a = rsaJwk();
  const b = rsaJwk();
  const p256 = ecJwk("prime256v1");
  const other = ecJwk("prime256v1");
  const cases: Array<[string, object]> = [
    ["RSA with another key's p and q", { ...a, p: b.p, q: b.q }],
    ["RSA with another key's d", { ...a, d: b.d }],
    ["RSA with a wrong qi", { ...a, qi: b.qi }],
    ["RSA without d", { ...a, d: undefined }],
    ["EC with another key's d", { ...p256, d: other.d }],
    ["EC without d", { ...p256, d: undefined }],
    ["EC with a coordinate of the wrong size", { ...p256, x: Buffer.from(p256.x!, "base64url").subarray(1).toString("base64url") }],
    ["an unknown kty", { kty: "DSA" }],
  ];
  for (const [what, key] of cases) {
    const res = await call("PUT", "/keys/bad-import", { key });
    t.is(res.status, 400, what);
    t.is(res.json.error.code, "BadParameter", what);
  }
  t.is((await call("PUT", "/keys/bad-import", {})).status, 400, "no key at all");
  t.is((await call("GET", "/keys/bad-import")).status, 404, "nothing was imported");
});

test("import on a soft-deleted name is 409 Conflict", async (t) => {
  t.is((await call("PUT", "/keys/to-delete", { key: ecJwk("prime256v1") })).status, 200);
  t.is((await call("DELETE", "/keys/to-delete")).status, 200);
  const res = await call("PUT", "/keys/to-delete", { key: ecJwk("prime256v1") });
  t.is(res.status, 409);
  t.is(res.json.error.code, "Conflict");
});

test("tags: create carries them, PATCH with an empty version replaces them, and listing items carry them", async (t) => {
  const created = await call("POST", "/keys/tagged/create", { kty: "EC", crv: "P-256", tags: { p11_pub_CKA_ID: "0102" } });
  t.deepEqual(created.json.tags, { p11_pub_CKA_ID: "0102" });
  const patched = await call("PATCH", "/keys/tagged/", { tags: { p11_pub_CKA_ID: "0a0b", p11_pri_CKA_LABEL: "tagged" } });
  t.is(patched.status, 200, patched.text);
  t.deepEqual(patched.json.tags, { p11_pub_CKA_ID: "0a0b", p11_pri_CKA_LABEL: "tagged" });
  t.deepEqual((await keys.getKey("tagged")).properties.tags, { p11_pub_CKA_ID: "0a0b", p11_pri_CKA_LABEL: "tagged" });
  const item = (await listAll("/keys")).find((i) => i.kid.endsWith("/keys/tagged"));
  t.deepEqual(item?.tags, { p11_pub_CKA_ID: "0a0b", p11_pri_CKA_LABEL: "tagged" });
  const fromSdk: Record<string, string>[] = [];
  for await (const p of keys.listPropertiesOfKeys()) if (p.name === "tagged") fromSdk.push(p.tags!);
  t.deepEqual(fromSdk, [{ p11_pub_CKA_ID: "0a0b", p11_pri_CKA_LABEL: "tagged" }]);
});

test("key listing pages 25 at a time by default and follows nextLink to the end", async (t) => {
  await emulator.addKey(Array.from({ length: 27 }, (_, i) => `pg-${String(i).padStart(2, "0")}:EC:P-256`).join(","));
  const seen: string[] = [];
  let next: string | null = `${emulator.url}/keys?api-version=2025-07-01`;
  for (let pages = 0; next && pages < 10; pages++) {
    const res: RawResponse = await raw(next, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
    t.is(res.status, 200);
    t.true(res.json.value.length <= 25);
    if (pages === 0) t.is(res.json.value.length, 25);
    seen.push(...res.json.value.map((i: { kid: string }) => i.kid.split("/").pop()!));
    next = res.json.nextLink;
  }
  t.is(next, null);
  t.is(new Set(seen).size, seen.length);
  for (let i = 0; i < 27; i++) t.true(seen.includes(`pg-${String(i).padStart(2, "0")}`));
});
