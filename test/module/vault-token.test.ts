// Vault tokens through the real module (pkcs11js → shim → helper → emulator): the vault's keys on one token, keys
// made with C_GenerateKeyPair found again after a restart by their tags, labels changed with C_SetAttributeValue,
// certificates and private keys written with C_CreateObject, keys soft-deleted with C_DestroyObject, and the
// refusals. Every signature is verified against the JWK the emulator's REST API returns, never the module's.
import test from "ava";
import { execFileSync } from "node:child_process";
import { createPublicKey, generateKeyPairSync, randomBytes, verify, X509Certificate, type KeyObject } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import pkcs11js from "pkcs11js";
import { CKR } from "../../src/pkcs11/constants.ts";
import { API, attribute, findObjects, publicKeyFromJwk, rvOf, startModuleFixture, type Handle, type ModuleFixture, type VaultJwk } from "./harness.ts";

let fixture: ModuleFixture;
let vaultSlot: Buffer;
let emptySlot: Buffer;

test.before(async () => {
  fixture = await startModuleFixture({
    keys: "existing-rsa:RSA:2048,existing-ec:EC:P-256",
    extraSlots: [{ label: "vault" }, { key_name: "made-later", label: "empty" }],
  });
  const slots = fixture.pkcs11.C_GetSlotList(true);
  vaultSlot = slots[2]!;
  emptySlot = slots[3]!;
});
test.after.always(() => fixture?.close());

const { CKA_CLASS, CKA_LABEL, CKA_ID, CKA_TOKEN, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE } = pkcs11js;
const session = (slot: Buffer = vaultSlot, readWrite = true): Handle => fixture.pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | (readWrite ? pkcs11js.CKF_RW_SESSION : 0));

/** A new helper, as a new process would have: C_Finalize ends the helper, C_Initialize starts another. */
function restart(): void {
  fixture.pkcs11.C_Finalize();
  fixture.pkcs11.C_Initialize();
}

async function vaultKey(name: string): Promise<{ status: number; jwk?: VaultJwk; tags?: Record<string, string>; kid?: string }> {
  const response = await fixture.vaultGet(`/keys/${name}?${API}`);
  const body = response.body as { key?: VaultJwk; tags?: Record<string, string> };
  return { status: response.status, ...(body.key ? { jwk: body.key, kid: body.key.kid } : {}), ...(body.tags ? { tags: body.tags } : {}) };
}

function ecParams(oid: string): Buffer {
  return Buffer.from(oid, "hex");
}
const P256 = ecParams("06082a8648ce3d030107");
const P384 = ecParams("06052b81040022");

function generateEc(handle: Handle, label: string, id: Buffer, params = P256) {
  return fixture.pkcs11.C_GenerateKeyPair(
    handle,
    { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }, { type: CKA_TOKEN, value: true }, { type: pkcs11js.CKA_EC_PARAMS, value: params }, { type: CKA_LABEL, value: label }, { type: CKA_ID, value: id }, { type: pkcs11js.CKA_VERIFY, value: true }],
    [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_TOKEN, value: true }, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: CKA_LABEL, value: label }, { type: CKA_ID, value: id }, { type: pkcs11js.CKA_SIGN, value: true }],
  );
}

function signWith(handle: Handle, key: Handle, mechanism: number, data: Buffer, length: number): Buffer {
  fixture.pkcs11.C_SignInit(handle, { mechanism }, key);
  return fixture.pkcs11.C_Sign(handle, data, Buffer.alloc(length));
}

function verifiesEc(publicKey: KeyObject, data: Buffer, signature: Buffer): boolean {
  return verify("sha256", data, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature);
}

test.serial("the vault token shows every key of the vault; a find by label answers, and the key signs", (t) => {
  const handle = session(vaultSlot, false);
  t.is(fixture.pkcs11.C_GetTokenInfo(vaultSlot).label.trim(), "vault");
  const privateKeys = findObjects(fixture.pkcs11, handle, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }]);
  t.deepEqual(privateKeys.map((key) => attribute(fixture.pkcs11, handle, key, CKA_LABEL).toString()).sort(), ["existing-ec", "existing-rsa"]);
  const [ec] = findObjects(fixture.pkcs11, handle, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: "existing-ec" }]);
  const data = randomBytes(64);
  const signature = signWith(handle, ec!, pkcs11js.CKM_ECDSA_SHA256, data, 64);
  t.true(verifiesEc(fixture.key("existing-ec").publicKey, data, signature));
  t.false(verifiesEc(fixture.key("existing-ec").publicKey, Buffer.concat([data, Buffer.from("x")]), signature));
  // Untagged keys keep today's CKA_ID: the SHA-1 of the public key bits, the same on the per-key slot.
  const perKey = fixture.pkcs11.C_OpenSession(fixture.key("existing-ec").slot, pkcs11js.CKF_SERIAL_SESSION);
  const [perKeyPrivate] = findObjects(fixture.pkcs11, perKey, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }]);
  t.deepEqual(attribute(fixture.pkcs11, handle, ec!, CKA_ID), attribute(fixture.pkcs11, perKey, perKeyPrivate!, CKA_ID));
  fixture.pkcs11.C_CloseSession(perKey);
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("C_GenerateKeyPair makes an EC key named by its label; a new helper finds it by label and id, and it signs", async (t) => {
  const id = randomBytes(8);
  const { privateKey } = generateEc(session(), "gen-ec-p384", id, P384);
  t.truthy(privateKey);
  const stored = await vaultKey("gen-ec-p384");
  t.is(stored.status, 200);
  t.is(stored.jwk!.crv, "P-384");
  t.is(stored.tags!.p11_pri_CKA_LABEL, "gen-ec-p384");
  t.is(stored.tags!.p11_pri_CKA_ID, id.toString("hex"));
  t.deepEqual(stored.jwk!.key_ops?.sort(), ["sign", "verify"]);

  restart();
  const handle = session(vaultSlot, false);
  const byId = findObjects(fixture.pkcs11, handle, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_ID, value: id }]);
  const byLabel = findObjects(fixture.pkcs11, handle, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: "gen-ec-p384" }]);
  t.is(byId.length, 1);
  t.deepEqual(byId, byLabel);
  t.true(attribute(fixture.pkcs11, handle, byId[0]!, pkcs11js.CKA_LOCAL).equals(Buffer.from([1])), "made on the token: CKA_LOCAL true");
  const data = randomBytes(100);
  fixture.pkcs11.C_SignInit(handle, { mechanism: pkcs11js.CKM_ECDSA_SHA384 }, byId[0]!);
  const signature = fixture.pkcs11.C_Sign(handle, data, Buffer.alloc(96));
  const vaultPublic = publicKeyFromJwk(stored.jwk!);
  t.true(verify("sha384", data, { key: vaultPublic, dsaEncoding: "ieee-p1363" }, signature));
  t.false(verify("sha384", randomBytes(100), { key: vaultPublic, dsaEncoding: "ieee-p1363" }, signature));
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("C_GenerateKeyPair makes an RSA 3072 key; its public key object is the vault's", async (t) => {
  const handle = session();
  const { publicKey, privateKey } = fixture.pkcs11.C_GenerateKeyPair(
    handle,
    { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
    [{ type: CKA_TOKEN, value: true }, { type: pkcs11js.CKA_MODULUS_BITS, value: 3072 }, { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) }, { type: CKA_LABEL, value: "gen-rsa" }],
    [{ type: CKA_TOKEN, value: true }, { type: CKA_LABEL, value: "gen-rsa" }, { type: pkcs11js.CKA_SIGN, value: true }],
  );
  const stored = await vaultKey("gen-rsa");
  t.is(Buffer.from(stored.jwk!.n!, "base64url").length, 384);
  t.deepEqual(attribute(fixture.pkcs11, handle, publicKey, pkcs11js.CKA_MODULUS), Buffer.from(stored.jwk!.n!, "base64url"));
  const data = randomBytes(32);
  const signature = signWith(handle, privateKey, pkcs11js.CKM_SHA256_RSA_PKCS, data, 384);
  t.true(verify("sha256", data, publicKeyFromJwk(stored.jwk!), signature));
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("a taken name is never overwritten or rotated: CKR_ATTRIBUTE_VALUE_INVALID, and the key keeps its version", async (t) => {
  const before = await vaultKey("existing-ec");
  const handle = session();
  t.is(rvOf(() => generateEc(handle, "existing-ec", randomBytes(4))), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);
  // Case does not make another name in Key Vault.
  t.is(rvOf(() => generateEc(handle, "EXISTING-EC", randomBytes(4))), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);
  t.is((await vaultKey("existing-ec")).kid, before.kid);
  const versions = await fixture.vaultGet(`/keys/existing-ec/versions?${API}`);
  t.is((versions.body as { value: unknown[] }).value.length, 1);
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("templates the vault cannot honour are refused before anything is made", async (t) => {
  const handle = session();
  const pub = [{ type: pkcs11js.CKA_EC_PARAMS, value: P256 }, { type: CKA_LABEL, value: "refused" }];
  const gen = (privateTemplate: pkcs11js.Template, publicTemplate: pkcs11js.Template = pub) => rvOf(() => fixture.pkcs11.C_GenerateKeyPair(handle, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, publicTemplate, privateTemplate));
  t.is(gen([{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);
  t.is(gen([{ type: pkcs11js.CKA_SENSITIVE, value: false }]), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);
  t.is(gen([{ type: CKA_TOKEN, value: false }]), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);
  t.is(gen([], [{ type: pkcs11js.CKA_EC_PARAMS, value: ecParams("06052b81040021") }]), CKR.CURVE_NOT_SUPPORTED, "P-224");
  t.is(gen([], [{ type: CKA_LABEL, value: "no-curve" }]), pkcs11js.CKR_TEMPLATE_INCOMPLETE);
  t.is(gen([{ type: pkcs11js.CKA_DECRYPT, value: true }]), pkcs11js.CKR_TEMPLATE_INCONSISTENT, "an EC key cannot decrypt");
  t.is(gen([{ type: pkcs11js.CKA_LOCAL, value: true }]), pkcs11js.CKR_ATTRIBUTE_READ_ONLY);
  t.is(
    rvOf(() => fixture.pkcs11.C_GenerateKeyPair(handle, { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN }, [{ type: pkcs11js.CKA_MODULUS_BITS, value: 1024 }], [])),
    pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID,
  );
  const readOnly = session(vaultSlot, false);
  t.is(rvOf(() => fixture.pkcs11.C_GenerateKeyPair(readOnly, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, pub, [])), pkcs11js.CKR_SESSION_READ_ONLY);
  t.is((await vaultKey("refused")).status, 404, "no refused template made a key");
  fixture.pkcs11.C_CloseSession(readOnly);
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("C_SetAttributeValue changes the label in the key's tags; a new helper sees it", async (t) => {
  const handle = session();
  const { privateKey, publicKey } = generateEc(handle, "relabel-me", Buffer.from("01", "hex"));
  fixture.pkcs11.C_SetAttributeValue(handle, privateKey, [{ type: CKA_LABEL, value: "relabelled" }]);
  t.is(attribute(fixture.pkcs11, handle, privateKey, CKA_LABEL).toString(), "relabelled");
  t.is(attribute(fixture.pkcs11, handle, publicKey, CKA_LABEL).toString(), "relabel-me", "the public key keeps its own label");
  t.is(rvOf(() => fixture.pkcs11.C_SetAttributeValue(handle, privateKey, [{ type: pkcs11js.CKA_SIGN, value: false }])), pkcs11js.CKR_ATTRIBUTE_READ_ONLY);
  const stored = await vaultKey("relabel-me");
  t.is(stored.tags!.p11_pri_CKA_LABEL, "relabelled");
  t.is(stored.tags!.p11_pub_CKA_LABEL, "relabel-me");
  restart();
  const again = session(vaultSlot, false);
  t.is(findObjects(fixture.pkcs11, again, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: "relabelled" }]).length, 1);
  fixture.pkcs11.C_CloseSession(again);
});

function openssl(args: string[], input?: Buffer): Buffer {
  return execFileSync("openssl", args, { input, stdio: ["pipe", "pipe", "pipe"] });
}

test.serial("C_CreateObject of a certificate stores it for the key whose public key it holds; a CA certificate stays as an authority; others are refused", async (t) => {
  const handle = session();
  const id = randomBytes(6);
  generateEc(handle, "certified", id);
  const stored = await vaultKey("certified");
  const dir = fixture.dir;
  const keyPem = path.join(dir, "certified.pub.pem");
  writeFileSync(keyPem, publicKeyFromJwk(stored.jwk!).export({ type: "spki", format: "pem" }));
  // A test CA signs a certificate that holds the vault key's public key.
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path.join(dir, "ca.key"), "-out", path.join(dir, "ca.pem"), "-subj", "/CN=Test CA", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE"]);
  openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path.join(dir, "throwaway.key"), "-out", path.join(dir, "leaf.csr"), "-subj", "/CN=certified"]);
  openssl(["x509", "-req", "-in", path.join(dir, "leaf.csr"), "-force_pubkey", keyPem, "-CA", path.join(dir, "ca.pem"), "-CAkey", path.join(dir, "ca.key"), "-CAcreateserial", "-days", "2", "-outform", "DER", "-out", path.join(dir, "leaf.der")]);
  const leaf = readFileSync(path.join(dir, "leaf.der"));
  const ca = new X509Certificate(readFileSync(path.join(dir, "ca.pem"))).raw;
  const certificate = fixture.pkcs11.C_CreateObject(handle, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }, { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 }, { type: pkcs11js.CKA_VALUE, value: leaf }, { type: CKA_ID, value: id }, { type: CKA_LABEL, value: "certified" }]);
  t.deepEqual(attribute(fixture.pkcs11, handle, certificate, pkcs11js.CKA_VALUE), leaf);
  fixture.pkcs11.C_CreateObject(handle, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }, { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 }, { type: pkcs11js.CKA_VALUE, value: Buffer.from(ca) }, { type: CKA_LABEL, value: "Test CA" }]);
  // A leaf certificate for no key on the token.
  const strangerKey = path.join(dir, "stranger.pem");
  writeFileSync(strangerKey, generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "pem" }));
  openssl(["x509", "-req", "-in", path.join(dir, "leaf.csr"), "-force_pubkey", strangerKey, "-CA", path.join(dir, "ca.pem"), "-CAkey", path.join(dir, "ca.key"), "-days", "2", "-outform", "DER", "-out", path.join(dir, "stranger.der")]);
  t.is(rvOf(() => fixture.pkcs11.C_CreateObject(handle, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }, { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 }, { type: pkcs11js.CKA_VALUE, value: readFileSync(path.join(dir, "stranger.der")) }])), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);

  restart();
  const again = session(vaultSlot, false);
  const certificates = findObjects(fixture.pkcs11, again, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }]);
  const values = certificates.map((object) => attribute(fixture.pkcs11, again, object, pkcs11js.CKA_VALUE));
  t.true(values.some((value) => value.equals(leaf)), "the key's certificate is seen by a new helper");
  t.true(values.some((value) => value.equals(Buffer.from(ca))), "so is the CA certificate");
  const [mine] = findObjects(fixture.pkcs11, again, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }, { type: CKA_ID, value: id }]);
  t.deepEqual(attribute(fixture.pkcs11, again, mine!, pkcs11js.CKA_VALUE), leaf);
  const [authority] = findObjects(fixture.pkcs11, again, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }, { type: pkcs11js.CKA_CERTIFICATE_CATEGORY, value: 2 }]);
  t.deepEqual(attribute(fixture.pkcs11, again, authority!, pkcs11js.CKA_VALUE), Buffer.from(ca));
  fixture.pkcs11.C_CloseSession(again);
});

test.serial("C_CreateObject of an RSA private key without CKA_COEFFICIENT imports it; it signs like the original", async (t) => {
  const { privateKey: original, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = original.export({ format: "jwk" });
  const b = (value: string | undefined): Buffer => Buffer.from(value!, "base64url");
  const handle = session();
  const imported = fixture.pkcs11.C_CreateObject(handle, [
    { type: CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
    { type: CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: CKA_LABEL, value: "imported-rsa" },
    { type: CKA_ID, value: Buffer.from("c0ffee", "hex") },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_MODULUS, value: b(jwk.n) },
    { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: b(jwk.e) },
    { type: pkcs11js.CKA_PRIVATE_EXPONENT, value: b(jwk.d) },
    { type: pkcs11js.CKA_PRIME_1, value: b(jwk.p) },
    { type: pkcs11js.CKA_PRIME_2, value: b(jwk.q) },
  ]);
  t.true(attribute(fixture.pkcs11, handle, imported, pkcs11js.CKA_NEVER_EXTRACTABLE).equals(Buffer.from([0])));
  t.true(attribute(fixture.pkcs11, handle, imported, pkcs11js.CKA_EXTRACTABLE).equals(Buffer.from([0])));
  const stored = await vaultKey("imported-rsa");
  t.true(createPublicKey({ key: { kty: "RSA", n: stored.jwk!.n!, e: stored.jwk!.e! }, format: "jwk" }).equals(publicKey), "the vault holds the imported key");
  const data = randomBytes(48);
  const signature = signWith(handle, imported, pkcs11js.CKM_SHA256_RSA_PKCS, data, 256);
  t.true(verify("sha256", data, publicKey, signature), "verified with the original key's public half");
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("C_DestroyObject soft-deletes the key: recoverable in the vault, gone from every session and from a new helper", async (t) => {
  const first = session();
  const second = session(vaultSlot, false);
  const { privateKey, publicKey } = generateEc(first, "doomed-key", Buffer.from("dd", "hex"));
  t.is(rvOf(() => fixture.pkcs11.C_DestroyObject(first, publicKey)), CKR.ACTION_PROHIBITED, "the public key goes only with its private key");
  t.is(rvOf(() => fixture.pkcs11.C_DestroyObject(second, privateKey)), pkcs11js.CKR_SESSION_READ_ONLY);
  fixture.pkcs11.C_DestroyObject(first, privateKey);
  t.is((await vaultKey("doomed-key")).status, 404);
  const deleted = await fixture.vaultGet(`/deletedkeys/doomed-key?${API}`);
  t.is(deleted.status, 200, "soft-deleted, recoverable");
  t.truthy((deleted.body as { recoveryId?: string }).recoveryId);
  for (const handle of [first, second]) {
    t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(handle, privateKey, [{ type: CKA_LABEL }])), pkcs11js.CKR_OBJECT_HANDLE_INVALID);
    t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(handle, publicKey, [{ type: CKA_LABEL }])), pkcs11js.CKR_OBJECT_HANDLE_INVALID);
  }
  restart();
  const again = session(vaultSlot, false);
  t.deepEqual(findObjects(fixture.pkcs11, again, [{ type: CKA_LABEL, value: "doomed-key" }]), []);
  fixture.pkcs11.C_CloseSession(again);
});

test.serial("a per-key slot whose key does not exist yet is filled by C_GenerateKeyPair under its key_name, once", async (t) => {
  const handle = session(emptySlot);
  t.deepEqual(findObjects(fixture.pkcs11, handle, []), []);
  const { privateKey } = generateEc(handle, "whatever-label", Buffer.from("0e", "hex"));
  const stored = await vaultKey("made-later");
  t.is(stored.status, 200, "the key took the slot's key_name");
  const data = randomBytes(20);
  t.true(verifiesEc(publicKeyFromJwk(stored.jwk!), data, signWith(handle, privateKey, pkcs11js.CKM_ECDSA_SHA256, data, 64)));
  t.is(rvOf(() => generateEc(handle, "again", Buffer.from("0f", "hex"))), pkcs11js.CKR_TEMPLATE_INCONSISTENT, "a slot whose key exists is never rotated");
  t.is((await vaultKey("made-later")).kid, stored.kid);
  fixture.pkcs11.C_CloseSession(handle);
});

test.serial("without keys/create: C_GenerateKeyPair is CKR_FUNCTION_REJECTED, and signing still works", async (t) => {
  await fixture.emulator.setPermissions(["keys/create"]);
  try {
    const handle = session();
    t.is(rvOf(() => generateEc(handle, "not-allowed", Buffer.from("0a", "hex"))), pkcs11js.CKR_FUNCTION_REJECTED);
    const [ec] = findObjects(fixture.pkcs11, handle, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: "existing-ec" }]);
    const data = randomBytes(16);
    t.true(verifiesEc(fixture.key("existing-ec").publicKey, data, signWith(handle, ec!, pkcs11js.CKM_ECDSA_SHA256, data, 64)));
    fixture.pkcs11.C_CloseSession(handle);
  } finally {
    await fixture.emulator.setPermissions([]);
  }
  t.is((await vaultKey("not-allowed")).status, 404);
});
