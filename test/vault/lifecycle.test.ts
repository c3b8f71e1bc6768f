// The vault backend's key lifecycle against the emulator over HTTPS (Key Vault personality): listing with tags,
// create and import under a free name only, tag updates, soft delete, and the service kind from the challenge.
// Every result is checked against the vault's own REST answers (vaultRest) and signatures with node:crypto.
import { createHash, generateKeyPairSync, randomBytes, verify } from "node:crypto";
import test from "ava";
import { createCredential } from "../../src/auth/index.ts";
import { kindFromChallenge, rawKeySize } from "../../src/vault/backend.ts";
import { toVaultError } from "../../src/vault/errors.ts";
import { createVaultBackend, VaultError, type VaultBackend } from "../../src/vault/index.ts";
import { emulator, managedIdentityToken, moduleConfig, publicKeyOf, vaultRest, type RunningEmulator } from "./helpers.ts";

let emu: RunningEmulator;
let backend: VaultBackend;
let token: string;

const credentialFor = (accessToken: string) => createCredential({ AZURE_CLI_ACCESS_TOKEN: accessToken, HOME: "/nonexistent" });

test.before(async () => {
  emu = await emulator({ keys: "existing:EC:P-256,signer:RSA:2048", certs: ["signer"] });
  token = await managedIdentityToken(emu);
  backend = createVaultBackend(moduleConfig(emu), { credential: credentialFor(token) });
});

test.after.always(async () => {
  await backend?.close();
  await emu?.close();
});

const counts = (name?: string) => emu.requestCounts(name);

const total = () => Object.values(counts()).reduce((sum, n) => sum + n, 0);

test.serial("serviceKind: a Key Vault on localhost, learned from the first challenge's resource; asked once per vault", async (t) => {
  const fresh = createVaultBackend(moduleConfig(emu), { credential: credentialFor(token) });
  try {
    const before = total();
    t.is(await fresh.serviceKind(emu.url), "key-vault");
    const probe = total() - before;
    t.true(probe >= 1 && probe <= 2, "one listing request, challenged once");
    t.is(await fresh.serviceKind(emu.url), "key-vault");
    t.is(total() - before, probe, "the kind is kept");
    t.false((await fresh.getKey(emu.url, "existing")).managedHsm);
  } finally {
    await fresh.close();
  }
});

// Serial: the other tests create keys while this one compares two listings.
test.serial("listKeys: every key with its kid and tags in one listing, as the vault lists them", async (t) => {
  await vaultRest(emu, token, "PATCH", "/keys/existing/", { tags: { p11_pri_CKA_LABEL: "listed" } });
  const before = counts();
  const listing = await backend.listKeys(emu.url);
  const rest = await vaultRest(emu, token, "GET", "/keys?maxresults=25");
  const restNames = (rest.body.value as Array<{ kid: string }>).map((item) => item.kid.split("/").pop());
  t.true(restNames.includes("existing") && restNames.includes("signer"));
  for (const name of restNames) t.true(listing.some((entry) => entry.name === name), `${name} listed`);
  const existing = listing.find((entry) => entry.name === "existing")!;
  t.is(existing.kid, `${emu.url}/keys/existing`);
  t.true(existing.enabled);
  t.deepEqual(existing.tags, { p11_pri_CKA_LABEL: "listed" });
  const after = counts();
  t.is((after["get-key"] ?? 0) - (before["get-key"] ?? 0), 0, "no request per key");
});

test("listCertificateNames: the vault's certificates", async (t) => {
  t.deepEqual(await backend.listCertificateNames(emu.url), ["signer"]);
});

test("createKey RSA: size, key_ops, tags, nbf and exp reach the vault; the new key signs and node:crypto verifies", async (t) => {
  const notBefore = new Date(Math.floor(Date.now() / 1000 - 60) * 1000);
  const expiresOn = new Date(Math.floor(Date.now() / 1000 + 86_400) * 1000);
  const tags = { p11_pri_CKA_LABEL: "my rsa", p11_pri_CKA_ID: "0a0b" };
  const key = await backend.createKey(emu.url, "created-rsa", { kty: "RSA", keySize: 3072, publicExponent: 65537 }, { keyOps: ["sign", "verify"], tags, notBefore, expiresOn });
  const rest = await vaultRest(emu, token, "GET", "/keys/created-rsa");
  t.is(rest.status, 200);
  t.is(rest.body.key.kty, "RSA");
  t.is(Buffer.from(rest.body.key.n, "base64url").length, 384);
  t.deepEqual(rest.body.key.key_ops, ["sign", "verify"]);
  t.deepEqual(rest.body.tags, tags);
  t.is(rest.body.attributes.nbf, notBefore.getTime() / 1000);
  t.is(rest.body.attributes.exp, expiresOn.getTime() / 1000);
  t.is(key.kid, rest.body.key.kid);
  t.deepEqual(key.tags, tags);
  t.deepEqual(key.n, Buffer.from(rest.body.key.n, "base64url"));
  const digest = createHash("sha256").update("created").digest();
  const signature = await backend.sign(key, "RS256", digest);
  t.true(verify("sha256", Buffer.from("created"), publicKeyOf(key), signature));
});

test("createKey EC-HSM and oct-HSM: curve, HSM protection and size reach the vault", async (t) => {
  const ec = await backend.createKey(emu.url, "created-ec", { kty: "EC-HSM", curve: "P-384" }, { keyOps: ["sign"], tags: {} });
  const rest = await vaultRest(emu, token, "GET", "/keys/created-ec");
  t.is(rest.body.key.kty, "EC-HSM");
  t.is(rest.body.key.crv, "P-384");
  t.is(ec.crv, "P-384");
  const aes = await backend.createKey(emu.url, "created-aes", { kty: "oct-HSM", keySize: 192 }, { keyOps: ["encrypt", "decrypt"], tags: {} });
  t.is(aes.kty, "oct-HSM");
  t.deepEqual(aes.keyOps, ["encrypt", "decrypt"]);
  // The vault reports no size for oct keys; the size the backend sent is proven by the wrap algorithm it accepts.
  const aesWrap = await backend.createKey(emu.url, "created-kek", { kty: "oct-HSM", keySize: 192 }, { keyOps: ["wrapKey", "unwrapKey"], tags: {} });
  const value = randomBytes(16).toString("base64url");
  t.is((await vaultRest(emu, token, "POST", `/keys/created-kek/${aesWrap.version}/wrapkey`, { alg: "A192KW", value })).status, 200);
  t.is((await vaultRest(emu, token, "POST", `/keys/created-kek/${aesWrap.version}/wrapkey`, { alg: "A256KW", value })).status, 400);
});

test("createKey refuses a public exponent the SDK cannot send, before any request", async (t) => {
  const before = counts("odd-exponent");
  const error = await t.throwsAsync(backend.createKey(emu.url, "odd-exponent", { kty: "RSA", keySize: 2048, publicExponent: 3 }, { keyOps: ["sign"], tags: {} }), { instanceOf: VaultError });
  t.is(error?.kind, "bad-parameter");
  t.deepEqual(counts("odd-exponent"), before);
});

test("createKey on a taken name: conflict, no create request, the key keeps its one version", async (t) => {
  const before = (await vaultRest(emu, token, "GET", "/keys/existing/versions")).body.value.length as number;
  for (const spelling of ["existing", "EXISTING"]) {
    const error = await t.throwsAsync(backend.createKey(emu.url, spelling, { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: {} }), { instanceOf: VaultError });
    t.is(error?.kind, "conflict");
    t.regex(error!.message, new RegExp(`key '${spelling}' already exists in ${emu.url.replace(/[.:/]/g, "\\$&")}`));
  }
  t.is(counts("existing")["create-key"] ?? 0, 0, "the create never reached the vault");
  t.is((await vaultRest(emu, token, "GET", "/keys/existing/versions")).body.value.length, before);
});

test("deleteKey soft-deletes: the key is gone, listed as deleted and recoverable, never purged; its name stays taken", async (t) => {
  await backend.createKey(emu.url, "doomed", { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: { p11_pri_CKA_LABEL: "doomed" } });
  await backend.deleteKey(emu.url, "doomed");
  t.is((await vaultRest(emu, token, "GET", "/keys/doomed")).status, 404);
  const deleted = await vaultRest(emu, token, "GET", "/deletedkeys/doomed");
  t.is(deleted.status, 200);
  t.is(deleted.body.recoveryId, `${emu.url}/deletedkeys/doomed`);
  t.is(counts("doomed")["purge-deleted-key"] ?? 0, 0);
  t.false((await backend.listKeys(emu.url)).some((entry) => entry.name === "doomed"));

  const error = await t.throwsAsync(backend.createKey(emu.url, "doomed", { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: {} }), { instanceOf: VaultError });
  t.is(error?.kind, "conflict", "a soft-deleted name is taken too");
  t.regex(error!.message, /deleted but recoverable/);
  t.is((await vaultRest(emu, token, "GET", "/deletedkeys/doomed")).status, 200, "the refused create changed nothing");

  const recovered = await vaultRest(emu, token, "POST", "/deletedkeys/doomed/recover");
  t.is(recovered.status, 200);
  t.deepEqual(recovered.body.tags, { p11_pri_CKA_LABEL: "doomed" });
  t.is((await vaultRest(emu, token, "GET", "/keys/doomed")).status, 200);
});

test("deleteKey of a missing key: not-found", async (t) => {
  const error = await t.throwsAsync(backend.deleteKey(emu.url, "never-there"), { instanceOf: VaultError });
  t.is(error?.kind, "not-found");
});

test("updateKeyTags: the version's tags are replaced; the vault, the listing and the returned key agree", async (t) => {
  const created = await backend.createKey(emu.url, "tagged", { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: { p11_pri_CKA_LABEL: "old", keep: "no" } });
  const tags = { p11_pri_CKA_LABEL: "new label ü", p11_pri_CKA_ID: "c0ffee" };
  const updated = await backend.updateKeyTags(created, tags);
  t.deepEqual(updated.tags, tags);
  t.is(updated.version, created.version);
  const rest = await vaultRest(emu, token, "GET", `/keys/tagged/${created.version}`);
  t.deepEqual(rest.body.tags, tags);
  t.deepEqual((await backend.listKeys(emu.url)).find((entry) => entry.name === "tagged")?.tags, tags);
  t.deepEqual((await backend.getKey(emu.url, "tagged")).tags, tags);
});

test("importKey: an EC and an RSA private key become vault keys with the same public key, under free names only", async (t) => {
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const ecJwk = ec.privateKey.export({ format: "jwk" });
  const b = (value: string | undefined) => Buffer.from(value!, "base64url");
  const imported = await backend.importKey(emu.url, "imported-ec", { kty: "EC", crv: "P-256", x: b(ecJwk.x), y: b(ecJwk.y), d: b(ecJwk.d) }, { keyOps: ["sign", "verify"], tags: { p11_pri_CKA_LABEL: "imported" } });
  const rest = await vaultRest(emu, token, "GET", "/keys/imported-ec");
  t.is(rest.status, 200);
  t.is(rest.body.key.x, ecJwk.x);
  t.is(rest.body.key.y, ecJwk.y);
  t.is(rest.body.key.d, undefined, "no private part comes back");
  t.deepEqual(rest.body.key.key_ops, ["sign", "verify"]);
  t.deepEqual(rest.body.tags, { p11_pri_CKA_LABEL: "imported" });
  const digest = createHash("sha256").update("imported").digest();
  const signature = await backend.sign(imported, "ES256", digest);
  t.true(verify("sha256", Buffer.from("imported"), { key: ec.publicKey, dsaEncoding: "ieee-p1363" }, signature), "signed with the imported private key");

  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const j = rsa.privateKey.export({ format: "jwk" });
  const rsaKey = await backend.importKey(emu.url, "imported-rsa", { kty: "RSA-HSM", n: b(j.n), e: b(j.e), d: b(j.d), p: b(j.p), q: b(j.q), dp: b(j.dp), dq: b(j.dq), qi: b(j.qi) }, { keyOps: ["sign"], tags: {} });
  t.is((await vaultRest(emu, token, "GET", "/keys/imported-rsa")).body.key.kty, "RSA-HSM", "hsm: true was sent");
  const rsaSignature = await backend.sign(rsaKey, "RS256", digest);
  t.true(verify("sha256", Buffer.from("imported"), rsa.publicKey, rsaSignature));

  const error = await t.throwsAsync(backend.importKey(emu.url, "existing", { kty: "EC", crv: "P-256", x: b(ecJwk.x), y: b(ecJwk.y), d: b(ecJwk.d) }, { keyOps: ["sign"], tags: {} }), { instanceOf: VaultError });
  t.is(error?.kind, "conflict");
  t.is(counts("existing")["import-key"] ?? 0, 0);
});

test("kindFromChallenge: the resource or scope of the service's challenge headers (as recorded), nothing from a CAE challenge", (t) => {
  t.is(kindFromChallenge('Bearer authorization="https://login.windows.net/72f988bf", resource="https://vault.azure.net"'), "key-vault");
  t.is(kindFromChallenge('Bearer authorization="https://login.microsoftonline.com/72f988bf", resource="https://managedhsm.azure.net"'), "managed-hsm");
  t.is(kindFromChallenge('Bearer authorization="https://login.microsoftonline.us/t", resource="https://managedhsm.usgovcloudapi.net"'), "managed-hsm");
  t.is(kindFromChallenge('Bearer authorization="https://login.microsoftonline.com/t", scope="https://managedhsm.azure.net/.default"'), "managed-hsm");
  t.is(kindFromChallenge('Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3MiOnt9fQ=="'), undefined);
  t.is(kindFromChallenge(undefined), undefined);
  t.is(kindFromChallenge('Bearer resource="not a url"'), undefined);
});

test("a 409 from the service is a conflict", (t) => {
  const error = toVaultError({ name: "RestError", statusCode: 409, message: "x", details: { error: { code: "Conflict", message: "Key k is currently in a deleted but recoverable state" } } }, { operation: "create key", target: "key 'k'" });
  t.is(error.kind, "conflict");
  t.is(error.statusCode, 409);
});

test("rawKeySize: an oct key's key_size from the response body the SDK's JsonWebKey drops; nothing from a body without it", (t) => {
  const sent = rawKeySize();
  sent.onResponse({ status: 200, parsedBody: { key: { kid: "https://v/keys/k/1", kty: "oct", key_size: 192 } } });
  t.is(sent.keySize, 192);
  const absent = rawKeySize();
  absent.onResponse({ status: 200, parsedBody: { key: { kid: "https://v/keys/k/1", kty: "oct-HSM" } } });
  t.is(absent.keySize, undefined);
  const text = rawKeySize();
  text.onResponse({ status: 200, bodyAsText: JSON.stringify({ key: { key_size: 256 } }) });
  t.is(text.keySize, 256);
  const junk = rawKeySize();
  junk.onResponse({ status: 200, parsedBody: { key: { key_size: "256" } } });
  t.is(junk.keySize, undefined);
});
