// Decryption in the vault (CKM_RSA_PKCS_OAEP with SHA-1/SHA-256, CKM_RSA_PKCS) of ciphertexts made by node:crypto,
// and local encryption by the module checked by the vault's own decrypt (REST, not through the module).
import test from "ava";
import { constants, publicEncrypt } from "node:crypto";
import pkcs11js from "pkcs11js";
import { oaepParams, openSession, privateKeyOf, publicKeyObjectOf, rvOf, startModuleFixture, type ModuleFixture } from "./harness.ts";

const KEYS = ["rsa2048", "rsa3072"];
const OAEP = [
  { hash: "sha1", hashAlg: pkcs11js.CKM_SHA_1, mgf: pkcs11js.CKG_MGF1_SHA1, vaultAlg: "RSA-OAEP" },
  { hash: "sha256", hashAlg: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, vaultAlg: "RSA-OAEP-256" },
];
const plaintext = Buffer.from("a secret the vault will unwrap");

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa2048:RSA:2048,rsa3072:RSA:3072" });
});
test.after.always(() => fixture?.close());

function decrypt(keyName: string, mechanism: pkcs11js.Mechanism, ciphertext: Buffer, capacity = 1024): Buffer {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, keyName);
  try {
    pkcs11.C_DecryptInit(session, mechanism, privateKeyOf(fixture, session));
    return pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(capacity));
  } finally {
    pkcs11.C_CloseSession(session);
  }
}

function encrypt(keyName: string, mechanism: pkcs11js.Mechanism, data: Buffer): Buffer {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, keyName);
  try {
    pkcs11.C_EncryptInit(session, mechanism, publicKeyObjectOf(fixture, session));
    return pkcs11.C_Encrypt(session, data, Buffer.alloc(1024));
  } finally {
    pkcs11.C_CloseSession(session);
  }
}

async function vaultDecrypt(keyName: string, alg: string, ciphertext: Buffer): Promise<Buffer> {
  const response = await fixture.vaultPost(`${new URL(fixture.key(keyName).jwk.kid).pathname}/decrypt?api-version=7.4`, { alg, value: ciphertext.toString("base64url") });
  if (response.status !== 200) throw new Error(`vault decrypt: ${response.status} ${JSON.stringify(response.body)}`);
  return Buffer.from((response.body as { value: string }).value, "base64url");
}

for (const keyName of KEYS) {
  for (const { hash, hashAlg, mgf, vaultAlg } of OAEP) {
    const mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: oaepParams(hashAlg, mgf) };
    test(`${keyName}: OAEP-${hash} decrypt in the vault and encrypt locally`, async (t) => {
      const ciphertext = publicEncrypt({ key: fixture.key(keyName).publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, plaintext);
      t.deepEqual(decrypt(keyName, mechanism, ciphertext), plaintext);
      const made = encrypt(keyName, mechanism, plaintext);
      t.deepEqual(await vaultDecrypt(keyName, vaultAlg, made), plaintext);
    });
  }

  test(`${keyName}: CKM_RSA_PKCS decrypt (RSA1_5) and encrypt`, async (t) => {
    const ciphertext = publicEncrypt({ key: fixture.key(keyName).publicKey, padding: constants.RSA_PKCS1_PADDING }, plaintext);
    t.deepEqual(decrypt(keyName, { mechanism: pkcs11js.CKM_RSA_PKCS }, ciphertext), plaintext);
    const made = encrypt(keyName, { mechanism: pkcs11js.CKM_RSA_PKCS }, plaintext);
    t.deepEqual(await vaultDecrypt(keyName, "RSA1_5", made), plaintext);
  });
}

test("an OAEP label, a SHA-384 OAEP or a mismatched MGF is refused at C_DecryptInit", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa2048");
  const key = privateKeyOf(fixture, session);
  const cases = [
    oaepParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256, Buffer.from("label")),
    oaepParams(pkcs11js.CKM_SHA384, pkcs11js.CKG_MGF1_SHA384),
    oaepParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA1),
  ];
  for (const parameter of cases) t.is(rvOf(() => pkcs11.C_DecryptInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter }, key)), pkcs11js.CKR_MECHANISM_PARAM_INVALID);
  pkcs11.C_CloseSession(session);
});

test("a too-small buffer gets the plaintext length, and the retry returns the kept plaintext", (t) => {
  const { pkcs11 } = fixture;
  const ciphertext = publicEncrypt({ key: fixture.key("rsa2048").publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, plaintext);
  const session = openSession(fixture, "rsa2048");
  pkcs11.C_DecryptInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: oaepParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256) }, privateKeyOf(fixture, session));
  t.is(rvOf(() => pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(4))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  t.deepEqual(pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(plaintext.length)), plaintext);
  pkcs11.C_CloseSession(session);
});

test("a ciphertext of the wrong length and a corrupted one are refused", (t) => {
  const mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: oaepParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256) };
  t.is(rvOf(() => decrypt("rsa2048", mechanism, Buffer.alloc(100, 1))), pkcs11js.CKR_ENCRYPTED_DATA_LEN_RANGE);
  const ciphertext = publicEncrypt({ key: fixture.key("rsa2048").publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha1" }, plaintext);
  t.not(rvOf(() => decrypt("rsa2048", mechanism, ciphertext)), "ok");
});
