// RSASSA-PKCS1-v1_5 through the module: CKM_RSA_PKCS on a DigestInfo and CKM_SHAx_RSA_PKCS (single and multi-part)
// on RSA 2048/3072/4096, every signature verified by node:crypto against the vault's JWK.
import test from "ava";
import { constants, createHash, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { DIGEST_INFO_PREFIX, openSession, privateKeyOf, rvOf, signMultiPart, signOnce, startModuleFixture, verifyRv, type ModuleFixture } from "./harness.ts";

const KEYS = ["rsa2048", "rsa3072", "rsa4096"];
const HASHES = [
  { hash: "sha256", mechanism: pkcs11js.CKM_SHA256_RSA_PKCS },
  { hash: "sha384", mechanism: pkcs11js.CKM_SHA384_RSA_PKCS },
  { hash: "sha512", mechanism: pkcs11js.CKM_SHA512_RSA_PKCS },
];
const message = Buffer.from("the quick brown fox signs with PKCS#1 v1.5");

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa2048:RSA:2048,rsa3072:RSA:3072,rsa4096:RSA-HSM:4096" });
});
test.after.always(() => fixture?.close());

const verifiesPkcs1 = (keyName: string, hash: string, signature: Buffer): boolean =>
  verify(hash, message, { key: fixture.key(keyName).publicKey, padding: constants.RSA_PKCS1_PADDING }, signature);

for (const keyName of KEYS) {
  for (const { hash, mechanism } of HASHES) {
    test(`${keyName}: CKM_RSA_PKCS on a ${hash} DigestInfo`, (t) => {
      const digestInfo = Buffer.concat([Buffer.from(DIGEST_INFO_PREFIX[hash]!, "hex"), createHash(hash).update(message).digest()]);
      const signature = signOnce(fixture, keyName, { mechanism: pkcs11js.CKM_RSA_PKCS }, digestInfo);
      t.is(signature.length, Number(keyName.slice(3)) / 8);
      t.true(verifiesPkcs1(keyName, hash, signature));
      t.is(verifyRv(fixture, keyName, { mechanism: pkcs11js.CKM_RSA_PKCS }, digestInfo, signature), "ok");
    });

    test(`${keyName}: ${hash} hash-and-sign, single and multi-part`, (t) => {
      const single = signOnce(fixture, keyName, { mechanism }, message);
      t.true(verifiesPkcs1(keyName, hash, single));
      const multi = signMultiPart(fixture, keyName, { mechanism }, [message.subarray(0, 7), message.subarray(7, 8), message.subarray(8)]);
      t.true(verifiesPkcs1(keyName, hash, multi));
      t.is(verifyRv(fixture, keyName, { mechanism }, message, single), "ok");
      const tampered = Buffer.from(single);
      tampered[10] ^= 1;
      t.is(verifyRv(fixture, keyName, { mechanism }, message, tampered), pkcs11js.CKR_SIGNATURE_INVALID);
      t.is(verifyRv(fixture, keyName, { mechanism }, message, single.subarray(1)), pkcs11js.CKR_SIGNATURE_LEN_RANGE);
    });
  }
}

for (const hash of ["sha1", "sha224"]) {
  test(`CKM_RSA_PKCS signs a ${hash} DigestInfo exactly, through Key Vault's RSNULL`, (t) => {
    const digestInfo = Buffer.concat([Buffer.from(DIGEST_INFO_PREFIX[hash]!, "hex"), createHash(hash).update(message).digest()]);
    const signature = signOnce(fixture, "rsa2048", { mechanism: pkcs11js.CKM_RSA_PKCS }, digestInfo);
    t.true(verifiesPkcs1("rsa2048", hash, signature));
    t.false(verifiesPkcs1("rsa2048", "sha256", signature));
    t.is(verifyRv(fixture, "rsa2048", { mechanism: pkcs11js.CKM_RSA_PKCS }, digestInfo, signature), "ok");
  });
}

test("CKM_RSA_PKCS refuses input that is not a DER DigestInfo", (t) => {
  const digest = createHash("sha256").update(message).digest();
  const sha256Info = Buffer.concat([Buffer.from(DIGEST_INFO_PREFIX.sha256!, "hex"), digest]);
  const truncatedInfo = sha256Info.subarray(0, sha256Info.length - 1);
  const trailingByte = Buffer.concat([sha256Info, Buffer.from([0])]);
  for (const input of [digest, truncatedInfo, trailingByte, Buffer.from("not a digest info at all")]) {
    t.is(rvOf(() => signOnce(fixture, "rsa2048", { mechanism: pkcs11js.CKM_RSA_PKCS }, input)), pkcs11js.CKR_DATA_INVALID);
  }
  t.is(rvOf(() => signOnce(fixture, "rsa2048", { mechanism: pkcs11js.CKM_RSA_PKCS }, Buffer.alloc(246))), pkcs11js.CKR_DATA_LEN_RANGE);
});

test("a too-small buffer returns CKR_BUFFER_TOO_SMALL and keeps the operation for the retry", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa2048");
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, privateKeyOf(fixture, session));
  t.is(rvOf(() => pkcs11.C_Sign(session, message, Buffer.alloc(16))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  const signature = pkcs11.C_Sign(session, message, Buffer.alloc(256));
  t.true(verifiesPkcs1("rsa2048", "sha256", signature));
  // The successful call ended the operation.
  t.is(rvOf(() => pkcs11.C_Sign(session, message, Buffer.alloc(256))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  pkcs11.C_CloseSession(session);
});

test("a failed C_Sign ends the operation; CKM_RSA_PKCS is single-part", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa2048");
  const key = privateKeyOf(fixture, session);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS }, key);
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("bad"), Buffer.alloc(256))), pkcs11js.CKR_DATA_INVALID);
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("bad"), Buffer.alloc(256))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS }, key);
  t.is(rvOf(() => pkcs11.C_SignUpdate(session, message)), pkcs11js.CKR_FUNCTION_NOT_SUPPORTED);
  pkcs11.C_CloseSession(session);
});
