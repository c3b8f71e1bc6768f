// The error paths of the Init calls and of the tokens: precise return values, never an empty success.
import test from "ava";
import { createHash } from "node:crypto";
import pkcs11js from "pkcs11js";
import { findOne, openSession, privateKeyOf, publicKeyObjectOf, rvOf, startModuleFixture, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({
    keys: "rsa:RSA:2048,ec:EC:P-256",
    certs: ["rsa"],
    extraSlots: [{ key_name: "no-such-key", label: "missing" }],
    prepare: async (_emulator, { vaultPost }) => {
      const created = await vaultPost("/keys/verify-only/create?api-version=7.4", { kty: "EC", crv: "P-256", key_ops: ["verify"] });
      if (created.status !== 200) throw new Error(`create verify-only: ${created.status} ${JSON.stringify(created.body)}`);
      return ["verify-only"];
    },
  });
});
test.after.always(() => fixture?.close());

const handle = (value: number): Buffer => {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64LE(BigInt(value));
  return buffer;
};

test("C_SignInit checks the key and the mechanism", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa");
  const privateKey = privateKeyOf(fixture, session);
  const certificate = findOne(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }]);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, privateKey)), pkcs11js.CKR_KEY_TYPE_INCONSISTENT);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256 }, privateKey)), pkcs11js.CKR_MECHANISM_INVALID);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA1_RSA_PKCS }, privateKey)), pkcs11js.CKR_MECHANISM_INVALID);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP }, privateKey)), pkcs11js.CKR_MECHANISM_INVALID);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, handle(999))), pkcs11js.CKR_KEY_HANDLE_INVALID);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, certificate)), pkcs11js.CKR_KEY_HANDLE_INVALID);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, publicKeyObjectOf(fixture, session))), pkcs11js.CKR_KEY_TYPE_INCONSISTENT);
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("x"), Buffer.alloc(256))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, privateKey);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, privateKey)), pkcs11js.CKR_OPERATION_ACTIVE);
  t.is(rvOf(() => pkcs11.C_VerifyInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, privateKey)), pkcs11js.CKR_KEY_TYPE_INCONSISTENT);
  t.is(rvOf(() => pkcs11.C_DecryptInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, privateKey)), pkcs11js.CKR_MECHANISM_INVALID);
  pkcs11.C_CloseSession(session);
});

test("a key whose key_ops lack sign cannot sign, and the token offers no signing mechanism", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "verify-only");
  const privateKey = privateKeyOf(fixture, session);
  t.false(pkcs11.C_GetAttributeValue(session, privateKey, [{ type: pkcs11js.CKA_SIGN }])[0]!.value.equals(Buffer.from([1])));
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, privateKey)), pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED);
  const info = pkcs11.C_GetMechanismInfo(fixture.key("verify-only").slot, pkcs11js.CKM_ECDSA);
  t.is(info.flags & pkcs11js.CKF_SIGN, 0);
  t.not(info.flags & pkcs11js.CKF_VERIFY, 0);
  pkcs11.C_CloseSession(session);
});

test("a configured key that does not exist in the vault: the token is empty and offers only key generation", (t) => {
  const { pkcs11 } = fixture;
  const slots = pkcs11.C_GetSlotList(true);
  const missing = slots[slots.length - 1]!;
  t.is(pkcs11.C_GetTokenInfo(missing).label.trim(), "missing");
  const session = pkcs11.C_OpenSession(missing, pkcs11js.CKF_SERIAL_SESSION);
  pkcs11.C_FindObjectsInit(session, []);
  t.deepEqual(pkcs11.C_FindObjects(session, 10), []);
  pkcs11.C_FindObjectsFinal(session);
  const digests = [pkcs11js.CKM_SHA_1, pkcs11js.CKM_SHA224, pkcs11js.CKM_SHA256, pkcs11js.CKM_SHA384, pkcs11js.CKM_SHA512];
  t.deepEqual(pkcs11.C_GetMechanismList(missing), [...digests, pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11js.CKM_EC_KEY_PAIR_GEN]);
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, handle(1))), pkcs11js.CKR_KEY_HANDLE_INVALID);
  pkcs11.C_CloseSession(session);
});

test("unsupported object and random calls get precise errors; random bytes come", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "ec", true);
  t.is(rvOf(() => pkcs11.C_CreateObject(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA }])), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID);
  t.is(rvOf(() => pkcs11.C_SeedRandom(session, Buffer.from("seed"))), pkcs11js.CKR_RANDOM_SEED_NOT_SUPPORTED);
  const first = pkcs11.C_GenerateRandom(session, Buffer.alloc(64));
  const second = pkcs11.C_GenerateRandom(session, Buffer.alloc(64));
  t.is(first.length, 64);
  t.false(first.equals(second));
  t.is(rvOf(() => pkcs11.C_GenerateRandom(handle(123456), Buffer.alloc(8))), pkcs11js.CKR_SESSION_HANDLE_INVALID);
  pkcs11.C_CloseSession(session);
});

test("mechanism lists follow the key type; other mechanisms are invalid", (t) => {
  const { pkcs11 } = fixture;
  const rsa = pkcs11.C_GetMechanismList(fixture.key("rsa").slot);
  const ec = pkcs11.C_GetMechanismList(fixture.key("ec").slot);
  for (const mechanism of [pkcs11js.CKM_RSA_PKCS, pkcs11js.CKM_SHA256_RSA_PKCS, pkcs11js.CKM_RSA_PKCS_PSS, pkcs11js.CKM_RSA_PKCS_OAEP, pkcs11js.CKM_SHA256]) t.true(rsa.includes(mechanism));
  t.false(rsa.includes(pkcs11js.CKM_ECDSA));
  for (const mechanism of [pkcs11js.CKM_ECDSA, pkcs11js.CKM_ECDSA_SHA384, pkcs11js.CKM_SHA512]) t.true(ec.includes(mechanism));
  t.false(ec.includes(pkcs11js.CKM_RSA_PKCS));
  const info = pkcs11.C_GetMechanismInfo(fixture.key("rsa").slot, pkcs11js.CKM_SHA256_RSA_PKCS);
  t.not(info.flags & pkcs11js.CKF_HW, 0);
  t.not(info.flags & pkcs11js.CKF_SIGN, 0);
  t.is(info.minKeySize, 2048);
  t.is(info.maxKeySize, 4096);
  t.is(rvOf(() => pkcs11.C_GetMechanismInfo(fixture.key("rsa").slot, pkcs11js.CKM_ECDSA)), pkcs11js.CKR_MECHANISM_INVALID);
  t.is(rvOf(() => pkcs11.C_GetMechanismInfo(fixture.key("rsa").slot, pkcs11js.CKM_AES_CBC)), pkcs11js.CKR_MECHANISM_INVALID);
});

test("software digests equal node:crypto's, in one part and many", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "ec");
  const data = Buffer.from("digest me");
  for (const [hash, mechanism] of [
    ["sha1", pkcs11js.CKM_SHA_1],
    ["sha224", pkcs11js.CKM_SHA224],
    ["sha256", pkcs11js.CKM_SHA256],
    ["sha384", pkcs11js.CKM_SHA384],
    ["sha512", pkcs11js.CKM_SHA512],
  ] as const) {
    pkcs11.C_DigestInit(session, { mechanism });
    t.deepEqual(pkcs11.C_Digest(session, data, Buffer.alloc(64)), createHash(hash).update(data).digest());
    pkcs11.C_DigestInit(session, { mechanism });
    pkcs11.C_DigestUpdate(session, data.subarray(0, 3));
    pkcs11.C_DigestUpdate(session, data.subarray(3));
    t.deepEqual(pkcs11.C_DigestFinal(session, Buffer.alloc(64)), createHash(hash).update(data).digest());
  }
  t.is(rvOf(() => pkcs11.C_DigestInit(session, { mechanism: pkcs11js.CKM_MD5 })), pkcs11js.CKR_MECHANISM_INVALID);
  pkcs11.C_CloseSession(session);
});
