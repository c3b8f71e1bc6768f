// "A length query never calls the vault", proved with the emulator's request counts: C_Sign/C_SignFinal with a NULL
// output or a too-small buffer send no sign request and the real call sends exactly one; C_Decrypt answers a NULL
// output with the modulus length and no decrypt request, and a too-small buffer after the vault decrypted keeps the
// plaintext so that the retry sends no second request; once a token is loaded, objects, attributes, slot and
// mechanism lists, verification and encryption never ask the vault again. Every signature and plaintext is checked
// by node:crypto against the vault's JWK.
import test from "ava";
import { constants, createHash, publicEncrypt, randomBytes, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import {
  attribute,
  findObjects,
  oaepParams,
  openSession,
  privateKeyOf,
  publicKeyObjectOf,
  requestsSince,
  rvOf,
  startModuleFixture,
  type Handle,
  type ModuleFixture,
} from "./harness.ts";

// pkcs11js's C_Sign/C_Decrypt return `output.subarray(0, length)`, which hides the length a NULL-output call
// reports. Its native base class returns the CK_ULONG itself; a zero-length Buffer reaches the module as a NULL
// pointer (the module answers CKR_OK with the length, which it only does for NULL: a non-NULL zero-capacity buffer
// would get CKR_BUFFER_TOO_SMALL).
type RawOutputCall = (this: pkcs11js.PKCS11, session: Handle, input: Buffer, output: Buffer) => number;
const native = Object.getPrototypeOf(pkcs11js.PKCS11.prototype) as { C_Sign: RawOutputCall; C_Decrypt: RawOutputCall; C_SignFinal: (this: pkcs11js.PKCS11, session: Handle, output: Buffer) => number };
const NULL_OUTPUT = Buffer.alloc(0);

const message = Buffer.from("length queries stay on this side of the network");

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa2048:RSA:2048,p256:EC:P-256", certs: ["rsa2048"] });
  // C_Initialize starts loading every token in the background: wait for all of them, so that no load lands in a
  // test's count.
  for (const keyName of ["rsa2048", "p256"]) fixture.pkcs11.C_CloseSession(loadedSession(keyName).session);
});
test.after.always(() => fixture?.close());

/** The vault requests `action` caused, by operation. */
async function requestsDuring(action: () => void): Promise<Record<string, number>> {
  const before = await fixture.emulator.requestCounts();
  action();
  return requestsSince(before, await fixture.emulator.requestCounts());
}

/** A session whose token is already loaded, so that the counts see only what the calls under test do. */
function loadedSession(keyName: string): { session: Handle; key: Handle } {
  const session = openSession(fixture, keyName);
  return { session, key: privateKeyOf(fixture, session) };
}

const SIGNERS = [
  { keyName: "rsa2048", mechanism: pkcs11js.CKM_SHA256_RSA_PKCS, length: 256, check: (signature: Buffer) => verify("sha256", message, fixture.key("rsa2048").publicKey, signature) },
  {
    keyName: "p256",
    mechanism: pkcs11js.CKM_ECDSA_SHA256,
    length: 64,
    check: (signature: Buffer) => verify("sha256", message, { key: fixture.key("p256").publicKey, dsaEncoding: "ieee-p1363" }, signature),
  },
];

for (const { keyName, mechanism, length, check } of SIGNERS) {
  test.serial(`${keyName}: C_Sign length query and too-small buffer send no sign request; the real call sends one`, async (t) => {
    const { pkcs11 } = fixture;
    const { session, key } = loadedSession(keyName);
    pkcs11.C_SignInit(session, { mechanism }, key);
    let reported = 0;
    t.deepEqual(await requestsDuring(() => (reported = native.C_Sign.call(pkcs11, session, message, NULL_OUTPUT))), {});
    t.is(reported, length);
    t.deepEqual(
      await requestsDuring(() => t.is(rvOf(() => pkcs11.C_Sign(session, message, Buffer.alloc(length - 1))), pkcs11js.CKR_BUFFER_TOO_SMALL)),
      {},
    );
    let signature: Buffer = Buffer.alloc(0);
    t.deepEqual(await requestsDuring(() => (signature = pkcs11.C_Sign(session, message, Buffer.alloc(length)))), { sign: 1 });
    t.is(signature.length, length);
    t.true(check(signature));
    pkcs11.C_CloseSession(session);
  });

  test.serial(`${keyName}: C_SignFinal length query and too-small buffer send no sign request; the real call sends one`, async (t) => {
    const { pkcs11 } = fixture;
    const { session, key } = loadedSession(keyName);
    pkcs11.C_SignInit(session, { mechanism }, key);
    pkcs11.C_SignUpdate(session, message.subarray(0, 10));
    pkcs11.C_SignUpdate(session, message.subarray(10));
    let reported = 0;
    t.deepEqual(await requestsDuring(() => (reported = native.C_SignFinal.call(pkcs11, session, NULL_OUTPUT))), {});
    t.is(reported, length);
    t.deepEqual(await requestsDuring(() => t.is(rvOf(() => pkcs11.C_SignFinal(session, Buffer.alloc(1))), pkcs11js.CKR_BUFFER_TOO_SMALL)), {});
    let signature: Buffer = Buffer.alloc(0);
    t.deepEqual(await requestsDuring(() => (signature = pkcs11.C_SignFinal(session, Buffer.alloc(1024)))), { sign: 1 });
    t.true(check(signature));
    pkcs11.C_CloseSession(session);
  });
  test.serial(`${keyName}: a C_Sign length query after C_SignUpdate is refused with CKR_OPERATION_ACTIVE, not sized`, async (t) => {
    const { pkcs11 } = fixture;
    const { session, key } = loadedSession(keyName);
    pkcs11.C_SignInit(session, { mechanism }, key);
    pkcs11.C_SignUpdate(session, message.subarray(0, 10));
    t.is(rvOf(() => native.C_Sign.call(pkcs11, session, message, NULL_OUTPUT)), pkcs11js.CKR_OPERATION_ACTIVE);
    t.is(rvOf(() => pkcs11.C_SignFinal(session, Buffer.alloc(1024))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
    pkcs11.C_CloseSession(session);
  });
}

const DECRYPTERS = [
  {
    name: "CKM_RSA_PKCS_OAEP SHA-256",
    mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: oaepParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256) },
    encrypt: (plaintext: Buffer) => publicEncrypt({ key: fixture.key("rsa2048").publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, plaintext),
  },
  {
    name: "CKM_RSA_PKCS",
    mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS },
    encrypt: (plaintext: Buffer) => publicEncrypt({ key: fixture.key("rsa2048").publicKey, padding: constants.RSA_PKCS1_PADDING }, plaintext),
  },
];

for (const { name, mechanism, encrypt } of DECRYPTERS) {
  test.serial(`${name}: a length query answers the modulus length without a decrypt request`, async (t) => {
    const { pkcs11 } = fixture;
    const plaintext = randomBytes(32);
    const ciphertext = encrypt(plaintext);
    const { session, key } = loadedSession("rsa2048");
    pkcs11.C_DecryptInit(session, mechanism, key);
    let reported = 0;
    t.deepEqual(await requestsDuring(() => (reported = native.C_Decrypt.call(pkcs11, session, ciphertext, NULL_OUTPUT))), {});
    t.is(reported, 256);
    let decrypted: Buffer = Buffer.alloc(0);
    t.deepEqual(await requestsDuring(() => (decrypted = pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(256)))), { decrypt: 1 });
    t.deepEqual(decrypted, plaintext);
    pkcs11.C_CloseSession(session);
  });

  test.serial(`${name}: a too-small buffer after the vault decrypted keeps the plaintext; the retry sends no second request`, async (t) => {
    const { pkcs11 } = fixture;
    const plaintext = randomBytes(48);
    const ciphertext = encrypt(plaintext);
    const { session, key } = loadedSession("rsa2048");
    pkcs11.C_DecryptInit(session, mechanism, key);
    // The plaintext's length is unknown until the vault decrypts: the too-small buffer costs one request.
    t.deepEqual(await requestsDuring(() => t.is(rvOf(() => pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(8))), pkcs11js.CKR_BUFFER_TOO_SMALL)), { decrypt: 1 });
    // Now a length query reports the exact plaintext length, still without a request.
    let reported = 0;
    t.deepEqual(await requestsDuring(() => (reported = native.C_Decrypt.call(pkcs11, session, ciphertext, NULL_OUTPUT))), {});
    t.is(reported, plaintext.length);
    t.deepEqual(await requestsDuring(() => t.is(rvOf(() => pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(plaintext.length - 1))), pkcs11js.CKR_BUFFER_TOO_SMALL)), {});
    let decrypted: Buffer = Buffer.alloc(0);
    t.deepEqual(await requestsDuring(() => (decrypted = pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(plaintext.length)))), {});
    t.deepEqual(decrypted, plaintext);
    // The successful call ended the operation.
    t.is(rvOf(() => pkcs11.C_Decrypt(session, ciphertext, Buffer.alloc(256))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
    pkcs11.C_CloseSession(session);
  });

  test.serial(`${name}: a retry with a different ciphertext is decrypted afresh, not answered from the kept plaintext`, async (t) => {
    const { pkcs11 } = fixture;
    const first = randomBytes(40);
    const second = randomBytes(20);
    const { session, key } = loadedSession("rsa2048");
    pkcs11.C_DecryptInit(session, mechanism, key);
    t.deepEqual(await requestsDuring(() => t.is(rvOf(() => pkcs11.C_Decrypt(session, encrypt(first), Buffer.alloc(4))), pkcs11js.CKR_BUFFER_TOO_SMALL)), { decrypt: 1 });
    let decrypted: Buffer = Buffer.alloc(0);
    t.deepEqual(await requestsDuring(() => (decrypted = pkcs11.C_Decrypt(session, encrypt(second), Buffer.alloc(256)))), { decrypt: 1 });
    t.deepEqual(decrypted, second);
    pkcs11.C_CloseSession(session);
  });

  test.serial(`${name}: a length query for another ciphertext than the kept one answers the upper bound, not the kept length`, async (t) => {
    const { pkcs11 } = fixture;
    const short = randomBytes(10);
    const long = randomBytes(40);
    const longCiphertext = encrypt(long);
    const { session, key } = loadedSession("rsa2048");
    pkcs11.C_DecryptInit(session, mechanism, key);
    t.is(rvOf(() => pkcs11.C_Decrypt(session, encrypt(short), Buffer.alloc(4))), pkcs11js.CKR_BUFFER_TOO_SMALL);
    let reported = 0;
    t.deepEqual(await requestsDuring(() => (reported = native.C_Decrypt.call(pkcs11, session, longCiphertext, NULL_OUTPUT))), {});
    t.is(reported, 256);
    t.deepEqual(pkcs11.C_Decrypt(session, longCiphertext, Buffer.alloc(reported)), long);
    pkcs11.C_CloseSession(session);
  });
}

/** A signature and a decryption made by the vault over REST, outside the module, to check the module's local work. */
async function vaultCrypto(operation: "sign" | "decrypt", alg: string, value: Buffer): Promise<Buffer> {
  const response = await fixture.vaultPost(`${new URL(fixture.key("rsa2048").jwk.kid).pathname}/${operation}?api-version=7.4`, { alg, value: value.toString("base64url") });
  if (response.status !== 200) throw new Error(`vault ${operation}: ${response.status} ${JSON.stringify(response.body)}`);
  return Buffer.from((response.body as { value: string }).value, "base64url");
}

test.serial("after the first load, objects, attributes, lists, verify, encrypt and digest never call the vault", async (t) => {
  const { pkcs11 } = fixture;
  const { jwk, certificateDer, slot } = fixture.key("rsa2048");
  t.truthy(certificateDer);
  const vaultSignature = await vaultCrypto("sign", "RS256", createHash("sha256").update(message).digest());
  const tampered = Buffer.from(vaultSignature);
  tampered[7] ^= 1;
  const plaintext = randomBytes(32);
  let ciphertext: Buffer = Buffer.alloc(0);
  const requests = await requestsDuring(() => {
    const session = openSession(fixture, "rsa2048");
    const objects = findObjects(pkcs11, session, []);
    t.is(objects.length, 3);
    const [certificate] = findObjects(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }]);
    t.deepEqual(attribute(pkcs11, session, certificate!, pkcs11js.CKA_VALUE), certificateDer);
    const publicKey = publicKeyObjectOf(fixture, session);
    t.deepEqual(attribute(pkcs11, session, publicKey, pkcs11js.CKA_MODULUS), Buffer.from(jwk.n!, "base64url"));
    t.deepEqual(attribute(pkcs11, session, publicKey, pkcs11js.CKA_PUBLIC_EXPONENT), Buffer.from(jwk.e!, "base64url"));
    // pkcs11js reads every value with a length query first.
    for (const object of objects) {
      t.is(attribute(pkcs11, session, object, pkcs11js.CKA_ID).length, 20);
      t.is(attribute(pkcs11, session, object, pkcs11js.CKA_LABEL).toString(), "rsa2048");
    }
    t.is(pkcs11.C_GetSlotList(true).length, 2);
    t.true(pkcs11.C_GetMechanismList(slot).includes(pkcs11js.CKM_SHA256_RSA_PKCS));
    pkcs11.C_GetTokenInfo(slot);
    pkcs11.C_GetMechanismInfo(slot, pkcs11js.CKM_RSA_PKCS_OAEP);

    pkcs11.C_VerifyInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, publicKey);
    t.true(pkcs11.C_Verify(session, message, vaultSignature));
    pkcs11.C_VerifyInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, publicKey);
    t.is(rvOf(() => pkcs11.C_Verify(session, message, tampered)), pkcs11js.CKR_SIGNATURE_INVALID);
    pkcs11.C_EncryptInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: oaepParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256) }, publicKey);
    ciphertext = pkcs11.C_Encrypt(session, plaintext, Buffer.alloc(256));
    pkcs11.C_DigestInit(session, { mechanism: pkcs11js.CKM_SHA256 });
    t.deepEqual(pkcs11.C_Digest(session, message, Buffer.alloc(32)), createHash("sha256").update(message).digest());
    pkcs11.C_CloseSession(session);
  });
  t.deepEqual(requests, {});
  t.deepEqual(await vaultCrypto("decrypt", "RSA-OAEP-256", ciphertext), plaintext);
});
