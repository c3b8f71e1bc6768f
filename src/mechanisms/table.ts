// The PKCS#11 side: every mechanism the module offers, with its flags, key sizes, family and hash. Everything
// else (C_GetMechanismList/Info, CKA_ALLOWED_MECHANISMS, the Init checks) asks this table.
import { CKF, CKM } from "../pkcs11/constants.ts";
import type { KeyKind, KeyMaterial } from "../token/key-material.ts";
import type { HashName } from "./algorithms.ts";

export type MechanismFamily = "rsa-pkcs1" | "rsa-pss" | "ecdsa" | "rsa-oaep" | "digest" | "key-pair-gen";

export interface MechanismSpec {
  type: number;
  family: MechanismFamily;
  /** The key type it needs; digests need none. */
  keyKind?: KeyKind;
  /** Hash computed by the module (hash-and-sign mechanisms and digests). */
  hash?: HashName;
  flags: number;
  minKeyBits: number;
  maxKeyBits: number;
}

// Key Vault offers RSA 2048/3072/4096 and the curves P-256, P-256K, P-384, P-521.
const RSA = { keyKind: "RSA", minKeyBits: 2048, maxKeyBits: 4096 } as const;
const EC = { keyKind: "EC", minKeyBits: 256, maxKeyBits: 521 } as const;
const SIGN_VERIFY = CKF.HW | CKF.SIGN | CKF.VERIFY;
const EC_FLAGS = SIGN_VERIFY | CKF.EC_F_P | CKF.EC_NAMEDCURVE | CKF.EC_UNCOMPRESS;
const DIGEST = { family: "digest", flags: CKF.DIGEST, minKeyBits: 0, maxKeyBits: 0 } as const;

// The order is C_GetMechanismList's. Hash-and-sign comes first: `pkcs11-tool --test` signs with the first
// CKF_HW|CKF_SIGN mechanism and, for CKM_RSA_PKCS, feeds it a SHA-1 DigestInfo, which Key Vault cannot sign.
export const MECHANISMS: readonly MechanismSpec[] = [
  { type: CKM.SHA256_RSA_PKCS, family: "rsa-pkcs1", hash: "sha256", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA384_RSA_PKCS, family: "rsa-pkcs1", hash: "sha384", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA512_RSA_PKCS, family: "rsa-pkcs1", hash: "sha512", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.RSA_PKCS, family: "rsa-pkcs1", ...RSA, flags: SIGN_VERIFY | CKF.ENCRYPT | CKF.DECRYPT },
  { type: CKM.RSA_PKCS_PSS, family: "rsa-pss", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA256_RSA_PKCS_PSS, family: "rsa-pss", hash: "sha256", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA384_RSA_PKCS_PSS, family: "rsa-pss", hash: "sha384", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.SHA512_RSA_PKCS_PSS, family: "rsa-pss", hash: "sha512", ...RSA, flags: SIGN_VERIFY },
  { type: CKM.RSA_PKCS_OAEP, family: "rsa-oaep", ...RSA, flags: CKF.HW | CKF.ENCRYPT | CKF.DECRYPT },
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
];

const BY_TYPE = new Map(MECHANISMS.map((spec) => [spec.type, spec]));

export const mechanismSpec = (type: number): MechanismSpec | undefined => BY_TYPE.get(type);

const OPERATION_FLAGS = CKF.SIGN | CKF.VERIFY | CKF.ENCRYPT | CKF.DECRYPT | CKF.DIGEST | CKF.GENERATE_KEY_PAIR;

/**
 * The keys whose mechanisms a token offers: its one key (a per-key slot), any key (a vault token, whose keys are of
 * every kind and which makes new ones), or none yet (a per-key slot whose key C_GenerateKeyPair may create).
 */
export type OfferedKeys = KeyMaterial | "any" | "none";

/**
 * The flags a mechanism has on one token: operations the key's key_ops forbid are removed, and a mechanism left
 * with no operation is not offered at all (undefined).
 */
export function flagsForKey(spec: MechanismSpec, keys: OfferedKeys): number | undefined {
  if (spec.keyKind === undefined || keys === "any") return spec.flags;
  if (spec.family === "key-pair-gen") return keys === "none" ? spec.flags : undefined;
  if (keys === "none" || spec.keyKind !== keys.kind) return undefined;
  let flags = spec.flags;
  if (!keys.can.sign) flags &= ~CKF.SIGN;
  if (!keys.can.verify) flags &= ~CKF.VERIFY;
  if (!keys.can.encrypt) flags &= ~CKF.ENCRYPT;
  if (!keys.can.decrypt) flags &= ~CKF.DECRYPT;
  return flags & OPERATION_FLAGS ? flags : undefined;
}

/** C_GetMechanismList for a token. */
export function mechanismsForKey(keys: OfferedKeys): number[] {
  return MECHANISMS.filter((spec) => flagsForKey(spec, keys) !== undefined).map((spec) => spec.type);
}

/** CKA_ALLOWED_MECHANISMS of a key object: the key mechanisms whose operations fit that object's side. */
export function allowedMechanisms(material: KeyMaterial, side: "private" | "public"): number[] {
  const sideFlags = side === "private" ? CKF.SIGN | CKF.DECRYPT : CKF.VERIFY | CKF.ENCRYPT;
  return MECHANISMS.filter((spec) => spec.keyKind !== undefined && spec.family !== "key-pair-gen" && ((flagsForKey(spec, material) ?? 0) & sideFlags) !== 0).map((spec) => spec.type);
}
