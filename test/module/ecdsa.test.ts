// ECDSA through the module on P-256, P-384, P-521 and secp256k1: CKM_ECDSA on digests of every length (truncated or
// zero-padded as ECDSA defines) and CKM_ECDSA_SHAx, output raw r||s, verified by node:crypto (OpenSSL).
import test from "ava";
import { createHash, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { p521 } from "@noble/curves/nist";
import { rvOf, signMultiPart, signOnce, startModuleFixture, verifyRv, type ModuleFixture } from "./harness.ts";

const KEYS = [
  { name: "p256", fieldBytes: 32 },
  { name: "p384", fieldBytes: 48 },
  { name: "p521", fieldBytes: 66 },
  { name: "k256", fieldBytes: 32 },
];
const DIGESTS = ["sha1", "sha224", "sha256", "sha384", "sha512"];
const HASH_MECHANISMS = [
  { hash: "sha256", mechanism: pkcs11js.CKM_ECDSA_SHA256 },
  { hash: "sha384", mechanism: pkcs11js.CKM_ECDSA_SHA384 },
  { hash: "sha512", mechanism: pkcs11js.CKM_ECDSA_SHA512 },
];
const message = Buffer.from("ECDSA through Key Vault");

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "p256:EC:P-256,p384:EC:P-384,p521:EC-HSM:P-521,k256:EC:P-256K" });
});
test.after.always(() => fixture?.close());

const verifiesP1363 = (keyName: string, hash: string, signature: Buffer): boolean =>
  verify(hash, message, { key: fixture.key(keyName).publicKey, dsaEncoding: "ieee-p1363" }, signature);

for (const { name, fieldBytes } of KEYS) {
  for (const hash of DIGESTS) {
    test(`${name}: CKM_ECDSA on a ${hash} digest`, (t) => {
      const digest = createHash(hash).update(message).digest();
      const signature = signOnce(fixture, name, { mechanism: pkcs11js.CKM_ECDSA }, digest);
      t.is(signature.length, 2 * fieldBytes);
      // OpenSSL applies ECDSA's own digest truncation: this checks the module's conversion independently.
      t.true(verifiesP1363(name, hash, signature));
      t.is(verifyRv(fixture, name, { mechanism: pkcs11js.CKM_ECDSA }, digest, signature), "ok");
      const tampered = Buffer.from(signature);
      tampered[tampered.length - 1] ^= 1;
      t.is(verifyRv(fixture, name, { mechanism: pkcs11js.CKM_ECDSA }, digest, tampered), pkcs11js.CKR_SIGNATURE_INVALID);
    });
  }

  for (const { hash, mechanism } of HASH_MECHANISMS) {
    test(`${name}: CKM_ECDSA_${hash.toUpperCase()} single and multi-part`, (t) => {
      const single = signOnce(fixture, name, { mechanism }, message);
      t.is(single.length, 2 * fieldBytes);
      t.true(verifiesP1363(name, hash, single));
      const multi = signMultiPart(fixture, name, { mechanism }, [message.subarray(0, 1), message.subarray(1)]);
      t.true(verifiesP1363(name, hash, multi));
      t.is(verifyRv(fixture, name, { mechanism }, message, multi), "ok");
      t.is(verifyRv(fixture, name, { mechanism }, message, multi.subarray(2)), pkcs11js.CKR_SIGNATURE_LEN_RANGE);
    });
  }
}

test("P-521: a digest longer than the order is cut to its leftmost 521 bits, or refused when that cannot fit ES512", (t) => {
  const key = fixture.key("p521");
  const uncompressed = Buffer.concat([
    Buffer.from([4]),
    Buffer.from(Buffer.from(key.jwk.x!, "base64url").toString("hex").padStart(132, "0"), "hex"),
    Buffer.from(Buffer.from(key.jwk.y!, "base64url").toString("hex").padStart(132, "0"), "hex"),
  ]);
  // 66 bytes whose leftmost 521 bits fit in 512 bits: the vault signs them and the signature verifies for the
  // full digest under ECDSA's own truncation rule (checked by @noble/curves, not by the module's signing path).
  const fits = Buffer.concat([Buffer.alloc(2), Buffer.alloc(64, 0xa5)]);
  const signature = signOnce(fixture, "p521", { mechanism: pkcs11js.CKM_ECDSA }, fits);
  t.true(p521.verify(signature, fits, uncompressed, { prehash: false, lowS: false, format: "compact" }));
  const tooBig = Buffer.alloc(66, 0xff);
  t.is(rvOf(() => signOnce(fixture, "p521", { mechanism: pkcs11js.CKM_ECDSA }, tooBig)), pkcs11js.CKR_DATA_LEN_RANGE);
});
