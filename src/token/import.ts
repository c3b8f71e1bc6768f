// C_CreateObject of a private key: the template's key components become a JWK for Key Vault's key import. The
// CRT values a client left out (OpenSC's pkcs11-tool writes RSA keys without CKA_COEFFICIENT) are computed, and the
// key is checked with node:crypto before it is sent, so a broken key is refused here rather than by the vault.
import { createECDH, createPrivateKey } from "node:crypto";
import { CURVES } from "../mechanisms/algorithms.ts";
import { curveOf, keyRequest, readKeyAttributes, type KeyAttributes, type KeyPolicy } from "../mechanisms/key-generation.ts";
import { CKA, CKK, CKO, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { ImportedKey } from "../vault/types.ts";
import type { TemplateReader } from "./template.ts";
import type { KeyRequest } from "./token.ts";

const toBig = (value: Buffer): bigint => BigInt(`0x${value.toString("hex") || "0"}`);
const toBytes = (value: bigint): Buffer => {
  const hex = value.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
};

function modInverse(a: bigint, m: bigint): bigint {
  let [oldR, r] = [((a % m) + m) % m, m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  if (oldR !== 1n) throw new Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, "the private key template: CKA_PRIME_2 has no inverse modulo CKA_PRIME_1 (not an RSA key)");
  return ((oldS % m) + m) % m;
}

export function privateKeyImport(reader: TemplateReader, policy: KeyPolicy): { request: KeyRequest; imported: ImportedKey } {
  const keyType = reader.expect(CKA.KEY_TYPE, [CKK.RSA, CKK.EC], CKR.ATTRIBUTE_VALUE_INVALID);
  if (keyType === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "a private key to import needs CKA_KEY_TYPE (CKK_RSA or CKK_EC)");
  const attributes: KeyAttributes = { keyOps: new Set() };
  readKeyAttributes(reader, CKO.PRIVATE_KEY, keyType, attributes);
  const needed = (type: number, name: string): Buffer => {
    const value = reader.bytes(type);
    if (value === undefined || value.length === 0) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, `a private key to import needs ${name}`);
    return value;
  };
  let imported: ImportedKey;
  if (keyType === CKK.RSA) {
    if (attributes.keyOps.size === 0) for (const operation of ["sign", "verify", "encrypt", "decrypt"]) attributes.keyOps.add(operation);
    const n = needed(CKA.MODULUS, "CKA_MODULUS");
    const e = needed(CKA.PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT");
    const d = needed(CKA.PRIVATE_EXPONENT, "CKA_PRIVATE_EXPONENT");
    const p = needed(CKA.PRIME_1, "CKA_PRIME_1 (the primes are needed to import into Key Vault)");
    const q = needed(CKA.PRIME_2, "CKA_PRIME_2");
    const [P, Q, D] = [toBig(p), toBig(q), toBig(d)];
    const dp = reader.bytes(CKA.EXPONENT_1) ?? toBytes(D % (P - 1n));
    const dq = reader.bytes(CKA.EXPONENT_2) ?? toBytes(D % (Q - 1n));
    const qi = reader.bytes(CKA.COEFFICIENT) ?? toBytes(modInverse(Q, P));
    if (toBig(n) !== P * Q) throw new Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, "the private key template: CKA_MODULUS is not CKA_PRIME_1 x CKA_PRIME_2");
    imported = { kty: policy.hsm ? "RSA-HSM" : "RSA", n, e, d, p, q, dp, dq, qi };
  } else {
    if (attributes.keyOps.size === 0) for (const operation of ["sign", "verify"]) attributes.keyOps.add(operation);
    const curve = CURVES[curveOf(needed(CKA.EC_PARAMS, "CKA_EC_PARAMS"))];
    const d = needed(CKA.VALUE, "CKA_VALUE (the private scalar)");
    const scalar = Buffer.concat([Buffer.alloc(Math.max(0, curve.fieldBytes - d.length)), d]).subarray(-curve.fieldBytes);
    let point: Buffer;
    try {
      const ecdh = createECDH(curve.name === "P-256K" ? "secp256k1" : curve.name === "P-256" ? "prime256v1" : curve.name === "P-384" ? "secp384r1" : "secp521r1");
      ecdh.setPrivateKey(scalar);
      point = ecdh.getPublicKey();
    } catch (error) {
      throw new Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, `the private key template: CKA_VALUE is not a private key on ${curve.name}: ${(error as Error).message}`);
    }
    const x = point.subarray(1, 1 + curve.fieldBytes);
    const y = point.subarray(1 + curve.fieldBytes);
    imported = { kty: policy.hsm ? "EC-HSM" : "EC", crv: curve.name, x, y, d: scalar };
  }
  reader.finish([CKA.PRIVATE, CKA.SUBJECT]);
  check(imported);
  const request = keyRequest(attributes, imported.kty.startsWith("RSA") ? { kty: imported.kty as "RSA", keySize: 2048 } : { kty: imported.kty as "EC", curve: imported.crv as "P-256" });
  return { request, imported };
}

/** node:crypto must accept the key as a consistent private key, or the vault is not asked. */
function check(key: ImportedKey): void {
  const b64 = (value: Buffer | undefined): string | undefined => value?.toString("base64url");
  try {
    if (key.kty.startsWith("RSA")) {
      createPrivateKey({ key: { kty: "RSA", n: b64(key.n), e: b64(key.e), d: b64(key.d), p: b64(key.p), q: b64(key.q), dp: b64(key.dp), dq: b64(key.dq), qi: b64(key.qi) }, format: "jwk" });
    } else {
      const crv = key.crv === "P-256K" ? "secp256k1" : key.crv;
      createPrivateKey({ key: { kty: "EC", crv, x: b64(key.x), y: b64(key.y), d: b64(key.d) }, format: "jwk" });
    }
  } catch (error) {
    throw new Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, `the private key template does not hold a consistent private key: ${(error as Error).message}`);
  }
}
