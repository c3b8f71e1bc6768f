// RSASSA-PSS through the module: CKM_RSA_PKCS_PSS on a digest and CKM_SHAx_RSA_PKCS_PSS on RSA 2048/3072/4096,
// verified by node:crypto; parameters Key Vault cannot honour are refused at C_SignInit.
import test from "ava";
import { constants, createHash, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { openSession, privateKeyOf, pssParams, rvOf, signMultiPart, signOnce, startModuleFixture, verifyRv, type ModuleFixture } from "./harness.ts";

const KEYS = ["rsa2048", "rsa3072", "rsa4096"];
const HASHES = [
  { hash: "sha256", length: 32, hashAlg: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, mechanism: pkcs11js.CKM_SHA256_RSA_PKCS_PSS },
  { hash: "sha384", length: 48, hashAlg: pkcs11js.CKM_SHA384, mgf: pkcs11js.CKG_MGF1_SHA384, mechanism: pkcs11js.CKM_SHA384_RSA_PKCS_PSS },
  { hash: "sha512", length: 64, hashAlg: pkcs11js.CKM_SHA512, mgf: pkcs11js.CKG_MGF1_SHA512, mechanism: pkcs11js.CKM_SHA512_RSA_PKCS_PSS },
];
const message = Buffer.from("RSA-PSS through Key Vault");

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa2048:RSA:2048,rsa3072:RSA:3072,rsa4096:RSA:4096" });
});
test.after.always(() => fixture?.close());

const verifiesPss = (keyName: string, hash: string, saltLength: number, signature: Buffer): boolean =>
  verify(hash, message, { key: fixture.key(keyName).publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature);

for (const keyName of KEYS) {
  for (const { hash, length, hashAlg, mgf, mechanism } of HASHES) {
    const parameter = pssParams(hashAlg, mgf, length);
    test(`${keyName}: CKM_RSA_PKCS_PSS on a ${hash} digest`, (t) => {
      const digest = createHash(hash).update(message).digest();
      const signature = signOnce(fixture, keyName, { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter }, digest);
      t.true(verifiesPss(keyName, hash, length, signature));
      t.is(verifyRv(fixture, keyName, { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter }, digest, signature), "ok");
      const tampered = Buffer.from(signature);
      tampered[5] ^= 0x80;
      t.is(verifyRv(fixture, keyName, { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter }, digest, tampered), pkcs11js.CKR_SIGNATURE_INVALID);
      t.is(verifyRv(fixture, keyName, { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter }, createHash(hash).update("other").digest(), signature), pkcs11js.CKR_SIGNATURE_INVALID);
    });

    test(`${keyName}: CKM_${hash.toUpperCase()}_RSA_PKCS_PSS single and multi-part`, (t) => {
      const single = signOnce(fixture, keyName, { mechanism, parameter }, message);
      t.true(verifiesPss(keyName, hash, length, single));
      const multi = signMultiPart(fixture, keyName, { mechanism, parameter }, [message.subarray(0, 3), message.subarray(3)]);
      t.true(verifiesPss(keyName, hash, length, multi));
      t.is(verifyRv(fixture, keyName, { mechanism, parameter }, message, multi), "ok");
    });
  }
}

test("parameters Key Vault cannot honour are refused at C_SignInit", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa2048");
  const key = privateKeyOf(fixture, session);
  const cases: pkcs11js.Mechanism[] = [
    { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter: pssParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA1, 32) },
    { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter: pssParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256, 20) },
    { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter: pssParams(pkcs11js.CKM_SHA_1, pkcs11js.CKG_MGF1_SHA1, 20) },
    { mechanism: pkcs11js.CKM_SHA384_RSA_PKCS_PSS, parameter: pssParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256, 32) },
    { mechanism: pkcs11js.CKM_RSA_PKCS_PSS },
  ];
  for (const mechanism of cases) t.is(rvOf(() => pkcs11.C_SignInit(session, mechanism, key)), pkcs11js.CKR_MECHANISM_PARAM_INVALID);
  pkcs11.C_CloseSession(session);
});

test("CKM_RSA_PKCS_PSS needs a digest of the parameters' hash length", (t) => {
  const parameter = pssParams(pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256, 32);
  t.is(rvOf(() => signOnce(fixture, "rsa2048", { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter }, Buffer.alloc(48, 1))), pkcs11js.CKR_DATA_LEN_RANGE);
});
