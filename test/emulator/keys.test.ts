// Key management through the real KeyClient: create, get (latest and by version), list with paging, versions,
// update, soft delete, and the 404s.
import test from "ava";
import { createHash, createPublicKey, verify } from "node:crypto";
import { KeyClient } from "@azure/keyvault-keys";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw } from "./raw.ts";

let emulator: TestEmulator;
let keys: KeyClient;

test.before(async () => {
  emulator = await startTestEmulator({ keys: "first:RSA:2048,ec-key:EC:P-384,aes:oct-HSM:256" });
  keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
});
test.after.always(() => emulator?.close());

test("keys from the spec have the requested type, size, curve and default key_ops", async (t) => {
  const rsa = await keys.getKey("first");
  t.is(rsa.keyType, "RSA");
  t.is(rsa.key!.n!.length, 256);
  t.deepEqual(rsa.keyOperations, ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]);
  t.regex(rsa.id!, new RegExp(`^${emulator.url}/keys/first/[0-9a-f]{32}$`));
  const ec = await keys.getKey("ec-key");
  t.is(ec.key!.crv, "P-384");
  t.is(ec.key!.x!.length, 48);
  t.deepEqual(ec.keyOperations, ["sign", "verify"]);
  const aes = await keys.getKey("aes");
  t.is(aes.keyType, "oct-HSM");
  t.is(aes.key!.k, undefined, "AES key material is never returned");
});

test("create makes new versions; get by version and list versions see them all", async (t) => {
  const v1 = await keys.createEcKey("versioned", { curve: "P-256", tags: { purpose: "test" } });
  const v2 = await keys.createEcKey("versioned", { curve: "P-256" });
  t.not(v1.properties.version, v2.properties.version);
  t.is((await keys.getKey("versioned")).properties.version, v2.properties.version);
  const old = await keys.getKey("versioned", { version: v1.properties.version! });
  t.deepEqual(old.key!.x, v1.key!.x);
  t.deepEqual(old.properties.tags, { purpose: "test" });
  const versions: string[] = [];
  for await (const p of keys.listPropertiesOfKeyVersions("versioned")) versions.push(p.version!);
  t.deepEqual(versions.sort(), [v1.properties.version!, v2.properties.version!].sort());
});

test("listing more than 25 keys pages with nextLink, and every key is seen once", async (t) => {
  await emulator.addKey(Array.from({ length: 30 }, (_, i) => `page-${String(i).padStart(2, "0")}:EC:P-256`).join(","));
  const names: string[] = [];
  let pages = 0;
  for await (const page of keys.listPropertiesOfKeys().byPage()) {
    pages++;
    t.true(page.length <= 25);
    names.push(...page.map((p) => p.name));
  }
  t.true(pages >= 2);
  t.is(new Set(names).size, names.length);
  for (let i = 0; i < 30; i++) t.true(names.includes(`page-${String(i).padStart(2, "0")}`));

  const token = await managedIdentityToken(emulator);
  const first = await raw(`${emulator.url}/keys?api-version=2025-07-01`, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
  t.is(first.json.value.length, 25);
  t.regex(first.json.nextLink, /^https:\/\/127\.0\.0\.1:\d+\/keys\?api-version=2025-07-01&\$skiptoken=[A-Za-z0-9_-]+&maxresults=25$/);
  t.regex(first.json.value[0].kid, /\/keys\/[^/]+$/, "list items carry the versionless kid");
  const second = await raw(first.json.nextLink, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
  t.is(second.status, 200);
  t.true(second.json.value.length >= 1);
});

test("updateKeyProperties changes enabled and key_ops of one version", async (t) => {
  const key = await keys.createRsaKey("updatable", { keySize: 2048 });
  const updated = await keys.updateKeyProperties("updatable", key.properties.version!, { enabled: false, keyOps: ["sign", "verify"] });
  t.false(updated.properties.enabled);
  t.deepEqual(updated.keyOperations, ["sign", "verify"]);
  const read = await keys.getKey("updatable");
  t.false(read.properties.enabled);
  t.deepEqual(read.keyOperations, ["sign", "verify"]);
});

test("a missing key is 404 KeyNotFound with the service's message", async (t) => {
  const error = await t.throwsAsync(keys.getKey("no-such-key"));
  t.is((error as any).statusCode, 404);
  t.is((error as any).code, "KeyNotFound");
  t.regex((error as any).message, /^A key with \(name\/id\) no-such-key was not found in this key vault/);
  const version = await t.throwsAsync(keys.getKey("first", { version: "0123456789abcdef0123456789abcdef" }));
  t.is((version as any).statusCode, 404);
});

test("delete is a soft delete: the key is gone, the deleted key is readable, recover brings it back", async (t) => {
  const created = await keys.createEcKey("doomed", { curve: "P-256" });
  const poller = await keys.beginDeleteKey("doomed", { intervalInMs: 10 });
  const deleted = await poller.pollUntilDone();
  t.is(deleted.name, "doomed");
  t.truthy(deleted.properties.recoveryId);
  t.truthy(deleted.properties.scheduledPurgeDate);
  t.is(((await t.throwsAsync(keys.getKey("doomed"))) as any).statusCode, 404);
  t.is((await keys.getDeletedKey("doomed")).id, created.id);
  const listed: string[] = [];
  for await (const d of keys.listDeletedKeys()) listed.push(d.name);
  t.true(listed.includes("doomed"));
  const conflict = await t.throwsAsync(keys.createEcKey("doomed", { curve: "P-256" }));
  t.is((conflict as any).statusCode, 409);
  const recovered = await (await keys.beginRecoverDeletedKey("doomed", { intervalInMs: 10 })).pollUntilDone();
  t.is(recovered.id, created.id);
  await (await keys.beginDeleteKey("doomed", { intervalInMs: 10 })).pollUntilDone();
  await keys.purgeDeletedKey("doomed");
  t.is(((await t.throwsAsync(keys.getDeletedKey("doomed"))) as any).statusCode, 404);
});

test("bad requests: unknown kty, bad key size, missing api-version, unknown route", async (t) => {
  const token = await managedIdentityToken(emulator);
  const post = (path: string, body: object) => raw(`${emulator.url}${path}`, { ca: emulator.caPem, method: "POST", headers: { authorization: `Bearer ${token}` }, body });
  t.is((await post("/keys/x/create?api-version=7.6", { kty: "DSA" })).status, 400);
  t.is((await post("/keys/x/create?api-version=7.6", { kty: "RSA", key_size: 1024 })).status, 400);
  t.is((await post("/keys/x/create?api-version=7.6", { kty: "EC", crv: "P-192" })).status, 400);
  t.is((await post("/keys/x/create", { kty: "RSA" })).status, 400);
  t.is((await post("/keys/x/create?api-version=7.6", "not json" as unknown as object)).status, 400);
  const unknown = await raw(`${emulator.url}/nothing/here?api-version=7.6`, { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
  t.is(unknown.status, 404);
});

test("names are case-insensitive: any spelling finds the key, which keeps its first spelling, and signs", async (t) => {
  const created = await keys.createEcKey("MixedCase-Key", { curve: "P-256" });
  const found = await keys.getKey("mixedcase-key");
  t.is(found.name, "MixedCase-Key");
  t.is(found.id, created.id);
  const again = await keys.createEcKey("MIXEDCASE-KEY", { curve: "P-256" });
  t.regex(again.id!, new RegExp(`^${emulator.url}/keys/MixedCase-Key/[0-9a-f]{32}$`), "a new version keeps the first spelling");
  const versions: string[] = [];
  for await (const p of keys.listPropertiesOfKeyVersions("mixedCASE-key")) versions.push(p.version!);
  t.is(versions.length, 2);
  const listed: string[] = [];
  for await (const p of keys.listPropertiesOfKeys()) if (p.name.toLowerCase() === "mixedcase-key") listed.push(p.name);
  t.deepEqual(listed, ["MixedCase-Key"]);

  const digest = createHash("sha256").update("case").digest();
  const signed = await keys.getCryptographyClient("MIXEDcase-key").sign("ES256", digest);
  const jwk = (await keys.getKey("MixedCase-Key")).key!;
  const publicKey = createPublicKey({ key: { kty: "EC", crv: "P-256", x: Buffer.from(jwk.x!).toString("base64url"), y: Buffer.from(jwk.y!).toString("base64url") }, format: "jwk" });
  t.true(verify("sha256", Buffer.from("case"), { key: publicKey, dsaEncoding: "ieee-p1363" }, signed.result), "the signature must verify against the JWK");

  const poller = await keys.beginDeleteKey("mixedcase-KEY");
  await poller.pollUntilDone();
  await t.throwsAsync(keys.getKey("MixedCase-Key"), { message: /was not found/ });
  const recovered = await keys.beginRecoverDeletedKey("MIXEDCASE-key");
  await recovered.pollUntilDone();
  t.is((await keys.getKey("mixedcase-key")).name, "MixedCase-Key", "a recovered key keeps its spelling");
});
