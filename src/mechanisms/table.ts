// The PKCS#11 side: every mechanism the module offers, with its flags, key sizes, family and hash. Everything
// else (C_GetMechanismList/Info, CKA_ALLOWED_MECHANISMS, the Init checks) asks this table.
import { CKF, CKM } from "../pkcs11/constants.ts";
import type { KeyKind, KeyMaterial } from "../token/key-material.ts";
import type { SecretMaterial } from "../token/secret-key.ts";
import type { HashName } from "./algorithms.ts";

export type MechanismFamily = "rsa-pkcs1" | "rsa-pss" | "ecdsa" | "rsa-oaep" | "digest" | "key-pair-gen" | "aes" | "aes-wrap" | "secret-key-gen";

export interface MechanismSpec {
  type: number;
  family: MechanismFamily;
  /** The key type it needs; digests and generic secret generation need none. */
  keyKind?: KeyKind | "AES";
  /** Hash computed by the module (hash-and-sign mechanisms and digests). */
  hash?: HashName;
  flags: number;
  /** Key sizes as C_GetMechanismInfo reports them: bits for RSA and EC, bytes for AES and generic secrets. */
  minKeyBits: number;
  maxKeyBits: number;
}

// Key Vault offers RSA 2048/3072/4096 and the curves P-256, P-256K, P-384, P-521.
const RSA = { keyKind: "RSA", minKeyBits: 2048, maxKeyBits: 4096 } as const;
const EC = { keyKind: "EC", minKeyBits: 256, maxKeyBits: 521 } as const;
const SIGN_VERIFY = CKF.HW | CKF.SIGN | CKF.VERIFY;
const EC_FLAGS = SIGN_VERIFY | CKF.EC_F_P | CKF.EC_NAMEDCURVE | CKF.EC_UNCOMPRESS;
const DIGEST = { family: "digest", flags: CKF.DIGEST, minKeyBits: 0, maxKeyBits: 0 } as const;
// AES key sizes are reported in bytes, as PKCS#11 does for AES.
const AES = { keyKind: "AES", minKeyBits: 16, maxKeyBits: 32 } as const;

// The order is C_GetMechanismList's. Hash-and-sign comes first: `pkcs11-tool --test` signs with the first
// CKF_HW|CKF_SIGN mechanism and, for CKM_RSA_PKCS, feeds it a SHA-1 DigestInfo, which Key Vault cannot sign.
export const MECHANISMS: readonly MechanismSpec[] = [
  { type: CKM.SHA256_RSA_PKCS, family: "rsa-pkcs1", hash: "sha256", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA384_RSA_PKCS, family: "rsa-pkcs1", hash: "sha384", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA512_RSA_PKCS, family: "rsa-pkcs1", hash: "sha512", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.RSA_PKCS, family: "rsa-pkcs1", ...RSA, flags: SIGN_VERIFY | CKF.ENCRYPT | CKF.DECRYPT | CKF.WRAP | CKF.UNWRAP },
  { type: CKM.RSA_PKCS_PSS, family: "rsa-pss", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA256_RSA_PKCS_PSS, family: "rsa-pss", hash: "sha256", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA384_RSA_PKCS_PSS, family: "rsa-pss", hash: "sha384", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA512_RSA_PKCS_PSS, family: "rsa-pss", hash: "sha512", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.RSA_PKCS_OAEP, family: "rsa-oaep", ...RSA, flags: CKF.HW | CKF.ENCRYPT | CKF.DECRYPT | CKF.WRAP | CKF.UNWRAP },
  { type: CKM.ECDSA, family: "ecdsa", ...EC, flags: EC_FLAGS },
  { type: CKM.ECDSA_SHA256, family: "ecdsa", hash: "sha256", ...EC, flags: EC_FLAGS },
  { type: CKM.ECDSA_SHA384, family: "ecdsa", hash: "sha384", ...EC, flags: EC_FLAGS },
  { type: CKM.ECDSA_SHA512, family: "ecdsa", hash: "sha512", ...EC, flags: EC_FLAGS },
  { type: CKM.SHA_1, hash: "sha1", ...DIGEST },
  { type: CKM.SHA224, hash: "sha224", ...DIGEST },
  { type: CKM.SHA256, hash: "sha256", ...DIGEST },
  { type: CKM.SHA384, hash: "sha384", ...DIGEST },
  { type: CKM.SHA512, hash: "sha512", ...DIGEST },
  // C_GenerateKeyPair in the vault (key-generation.ts): offered by vault tokens and by per-key slots whose key does
  // not exist yet.
  { type: CKM.RSA_PKCS_KEY_PAIR_GEN, family: "key-pair-gen", ...RSA, flags: CKF.HW | CKF.GENERATE_KEY_PAIR },
  { type: CKM.EC_KEY_PAIR_GEN, family: "key-pair-gen", ...EC, flags: CKF.HW | CKF.GENERATE_KEY_PAIR | CKF.EC_F_P | CKF.EC_NAMEDCURVE | CKF.EC_UNCOMPRESS },
  // AES (aes.ts): Managed HSM keys in the HSM, session keys with node:crypto. GCM encryption with an HSM key goes
  // through the message API, because the HSM chooses the IV.
  { type: CKM.AES_CBC, family: "aes", ...AES, flags: CKF.HW | CKF.ENCRYPT | CKF.DECRYPT },
  { type: CKM.AES_CBC_PAD, family: "aes", ...AES, flags: CKF.HW | CKF.ENCRYPT | CKF.DECRYPT },
  { type: CKM.AES_GCM, family: "aes", ...AES, flags: CKF.HW | CKF.ENCRYPT | CKF.DECRYPT | CKF.MESSAGE_ENCRYPT | CKF.MESSAGE_DECRYPT },
  { type: CKM.AES_KEY_WRAP, family: "aes-wrap", ...AES, flags: CKF.HW | CKF.WRAP | CKF.UNWRAP },
  { type: CKM.AES_KEY_WRAP_KWP, family: "aes-wrap", ...AES, flags: CKF.HW | CKF.WRAP | CKF.UNWRAP },
  { type: CKM.AES_KEY_GEN, family: "secret-key-gen", ...AES, flags: CKF.HW | CKF.GENERATE },
  { type: CKM.GENERIC_SECRET_KEY_GEN, family: "secret-key-gen", minKeyBits: 1, maxKeyBits: 512, flags: CKF.GENERATE },
];

const BY_TYPE = new Map(MECHANISMS.map((spec) => [spec.type, spec]));

export const mechanismSpec = (type: number): MechanismSpec | undefined => BY_TYPE.get(type);

const OPERATION_FLAGS = CKF.SIGN | CKF.VERIFY | CKF.ENCRYPT | CKF.DECRYPT | CKF.DIGEST | CKF.GENERATE_KEY_PAIR | CKF.GENERATE | CKF.WRAP | CKF.UNWRAP;

/**
 * The keys whose mechanisms a token offers: its one key (a per-key slot), any key (a vault token, whose keys are of
 * every kind and which makes new ones), or none yet (a per-key slot whose key C_GenerateKeyPair may create).
 */
export type OfferedKeys = KeyMaterial | SecretMaterial | "any" | "none";

const isSecret = (keys: KeyMaterial | SecretMaterial): keys is SecretMaterial => !("publicKey" in keys);

/**
 * The flags a mechanism has on one token: operations the key's key_ops forbid are removed, and a mechanism left
 * with no operation is not offered at all (undefined).
 */
export function flagsForKey(spec: MechanismSpec, keys: OfferedKeys): number | undefined {
  if (spec.family === "digest" || keys === "any") return spec.flags;
  if (spec.family === "key-pair-gen") return keys === "none" ? spec.flags : undefined;
  if (keys === "none") return undefined;
  if (spec.family === "secret-key-gen") return isSecret(keys) ? spec.flags : undefined;
  if (spec.keyKind !== (isSecret(keys) ? keys.kind : keys.kind)) return undefined;
  let flags = spec.flags;
  const can = keys.can as Partial<KeyMaterial["can"]>;
  if (!can.sign) flags &= ~CKF.SIGN;
  if (!can.verify) flags &= ~CKF.VERIFY;
  if (!can.encrypt) flags &= ~(CKF.ENCRYPT | CKF.MESSAGE_ENCRYPT);
  if (!can.decrypt) flags &= ~(CKF.DECRYPT | CKF.MESSAGE_DECRYPT);
  if (!can.wrap) flags &= ~CKF.WRAP;
  if (!can.unwrap) flags &= ~CKF.UNWRAP;
  return flags & OPERATION_FLAGS ? flags : undefined;
}

/** C_GetMechanismList for a token. */
export function mechanismsForKey(keys: OfferedKeys): number[] {
  return MECHANISMS.filter((spec) => flagsForKey(spec, keys) !== undefined).map((spec) => spec.type);
}

/** CKA_ALLOWED_MECHANISMS of a key object: the key mechanisms whose operations fit that object's side. */
export function allowedMechanisms(material: KeyMaterial | SecretMaterial, side: "private" | "public" | "secret"): number[] {
  const sideFlags = side === "private" ? CKF.SIGN | CKF.DECRYPT | CKF.UNWRAP : side === "public" ? CKF.VERIFY | CKF.ENCRYPT | CKF.WRAP : CKF.ENCRYPT | CKF.DECRYPT | CKF.WRAP | CKF.UNWRAP;
  return MECHANISMS.filter((spec) => spec.keyKind !== undefined && spec.family !== "key-pair-gen" && spec.family !== "secret-key-gen" && ((flagsForKey(spec, material) ?? 0) & sideFlags) !== 0).map((spec) => spec.type);
}
