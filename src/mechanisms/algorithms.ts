// The Key Vault side: hashes, curves and the service's sign/decrypt algorithms, each described once. The PKCS#11
// side lives in table.ts; the mapping between the two is the `vault*Algorithm` functions at the bottom.
import type { DecryptAlgorithm, SignAlgorithm } from "../vault/types.ts";
import { CKG, CKM } from "../pkcs11/constants.ts";

export type HashName = "sha1" | "sha224" | "sha256" | "sha384" | "sha512";

export interface HashSpec {
  name: HashName;
  /** The PKCS#11 digest mechanism (CKM_SHA256 ...), also the PSS/OAEP hashAlg. */
  mechanism: number;
  mgf: number;
  length: number;
  /** DER of DigestInfo up to the digest (RFC 8017 §9.2, note 1). */
  digestInfoPrefix: Buffer;
}

const hex = (value: string): Buffer => Buffer.from(value, "hex");

export const HASHES: Record<HashName, HashSpec> = {
  sha1: { name: "sha1", mechanism: CKM.SHA_1, mgf: CKG.MGF1_SHA1, length: 20, digestInfoPrefix: hex("3021300906052b0e03021a05000414") },
  sha224: { name: "sha224", mechanism: CKM.SHA224, mgf: CKG.MGF1_SHA224, length: 28, digestInfoPrefix: hex("302d300d06096086480165030402040500041c") },
  sha256: { name: "sha256", mechanism: CKM.SHA256, mgf: CKG.MGF1_SHA256, length: 32, digestInfoPrefix: hex("3031300d060960864801650304020105000420") },
  sha384: { name: "sha384", mechanism: CKM.SHA384, mgf: CKG.MGF1_SHA384, length: 48, digestInfoPrefix: hex("3041300d060960864801650304020205000430") },
  sha512: { name: "sha512", mechanism: CKM.SHA512, mgf: CKG.MGF1_SHA512, length: 64, digestInfoPrefix: hex("3051300d060960864801650304020305000440") },
};

export const hashByMechanism = (mechanism: number): HashSpec | undefined => Object.values(HASHES).find((hash) => hash.mechanism === mechanism);

/** Key Vault's `crv` names. */
export type CurveName = "P-256" | "P-384" | "P-521" | "P-256K";

export interface CurveSpec {
  name: CurveName;
  /** CKA_EC_PARAMS: the DER namedCurve OID. */
  oidDer: Buffer;
  /** Bit length of the group order: ECDSA uses the leftmost this-many bits of a digest. */
  orderBits: number;
  /** Bytes of one coordinate, and of r and of s. */
  fieldBytes: number;
  /** The curve name node:crypto's JWK import expects. */
  jwkCrv: string;
}

export const CURVES: Record<CurveName, CurveSpec> = {
  "P-256": { name: "P-256", oidDer: hex("06082a8648ce3d030107"), orderBits: 256, fieldBytes: 32, jwkCrv: "P-256" },
  "P-384": { name: "P-384", oidDer: hex("06052b81040022"), orderBits: 384, fieldBytes: 48, jwkCrv: "P-384" },
  "P-521": { name: "P-521", oidDer: hex("06052b81040023"), orderBits: 521, fieldBytes: 66, jwkCrv: "P-521" },
  "P-256K": { name: "P-256K", oidDer: hex("06052b8104000a"), orderBits: 256, fieldBytes: 32, jwkCrv: "secp256k1" },
};

export type SignFamily = "rsa-pkcs1" | "rsa-pss" | "ecdsa";

export interface VaultSignSpec {
  algorithm: SignAlgorithm;
  family: SignFamily;
  hash: HashName;
  /** ECDSA algorithms are tied to one curve. */
  curve?: CurveName;
}

export const VAULT_SIGN_ALGORITHMS: readonly VaultSignSpec[] = [
  { algorithm: "RS256", family: "rsa-pkcs1", hash: "sha256" },
  { algorithm: "RS384", family: "rsa-pkcs1", hash: "sha384" },
  { algorithm: "RS512", family: "rsa-pkcs1", hash: "sha512" },
  { algorithm: "PS256", family: "rsa-pss", hash: "sha256" },
  { algorithm: "PS384", family: "rsa-pss", hash: "sha384" },
  { algorithm: "PS512", family: "rsa-pss", hash: "sha512" },
  { algorithm: "ES256", family: "ecdsa", hash: "sha256", curve: "P-256" },
  { algorithm: "ES384", family: "ecdsa", hash: "sha384", curve: "P-384" },
  { algorithm: "ES512", family: "ecdsa", hash: "sha512", curve: "P-521" },
  { algorithm: "ES256K", family: "ecdsa", hash: "sha256", curve: "P-256K" },
];

export interface VaultDecryptSpec {
  algorithm: DecryptAlgorithm;
  padding: "oaep" | "pkcs1";
  /** OAEP hash, used for the label hash and MGF1 alike. */
  hash?: HashName;
}

export const VAULT_DECRYPT_ALGORITHMS: readonly VaultDecryptSpec[] = [
  { algorithm: "RSA-OAEP", padding: "oaep", hash: "sha1" },
  { algorithm: "RSA-OAEP-256", padding: "oaep", hash: "sha256" },
  { algorithm: "RSA1_5", padding: "pkcs1" },
];

/** The Key Vault algorithm that signs a `hash` digest with `family`, if the service has one. */
export function vaultSignAlgorithm(family: "rsa-pkcs1" | "rsa-pss", hash: HashName): VaultSignSpec | undefined {
  return VAULT_SIGN_ALGORITHMS.find((spec) => spec.family === family && spec.hash === hash);
}

export function vaultEcdsaAlgorithm(curve: CurveName): VaultSignSpec {
  const spec = VAULT_SIGN_ALGORITHMS.find((candidate) => candidate.family === "ecdsa" && candidate.curve === curve);
  if (!spec) throw new Error(`no Key Vault ECDSA algorithm for ${curve}`);
  return spec;
}

export function vaultDecryptAlgorithm(padding: "oaep" | "pkcs1", hash?: HashName): VaultDecryptSpec | undefined {
  return VAULT_DECRYPT_ALGORITHMS.find((spec) => spec.padding === padding && spec.hash === hash);
}
