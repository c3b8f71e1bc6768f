// Secret (symmetric) keys: Managed HSM's AES keys (oct-HSM), which never leave the HSM, and session keys, which live
// in this helper only (C_GenerateKey, C_CreateObject, C_UnwrapKey with CKA_TOKEN false) and are used with
// node:crypto. Both are CKO_SECRET_KEY objects built here.
import { CK_UNAVAILABLE_INFORMATION, CKA, CKK, CKM, CKO } from "../pkcs11/constants.ts";
import type { VaultKey } from "../vault/types.ts";
import { AttributeSet } from "./attributes.ts";
import type { ObjectIdentity, TokenObject } from "./objects.ts";

export type SecretKind = "AES" | "GENERIC";

export interface SecretUsage {
  encrypt: boolean;
  decrypt: boolean;
  wrap: boolean;
  unwrap: boolean;
}

export interface SecretMaterial {
  kind: SecretKind;
  /** CKA_VALUE_LEN in bytes; undefined for a vault key whose size could not be learned. */
  length: number | undefined;
  can: SecretUsage;
  /** A Managed HSM key. */
  key?: VaultKey;
  /** A session key's bytes. */
  value?: Buffer;
  sensitive: boolean;
  extractable: boolean;
  /** How the key came to be, for CKA_LOCAL, CKA_KEY_GEN_MECHANISM, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE. */
  generatedBy?: number;
  alwaysSensitive: boolean;
  neverExtractable: boolean;
}

export const AES_LENGTHS = [16, 24, 32] as const;

/** The usage of a vault key from its key_ops. */
export function usageFromKeyOps(keyOps: readonly string[]): SecretUsage {
  const ops = new Set(keyOps);
  return { encrypt: ops.has("encrypt"), decrypt: ops.has("decrypt"), wrap: ops.has("wrapKey"), unwrap: ops.has("unwrapKey") };
}

export interface SecretObjectSpec {
  handle: number;
  identity: ObjectIdentity;
  token: boolean;
  isPrivate: boolean;
  modifiable: boolean;
  destroyable: boolean;
  uniqueId: string;
  allowedMechanisms: number[];
  startDate?: Date;
  endDate?: Date;
}

export function secretKeyObject(material: SecretMaterial, spec: SecretObjectSpec, ulongSize: number): TokenObject {
  const set = new AttributeSet(ulongSize)
    .ulong(CKA.CLASS, CKO.SECRET_KEY)
    .bool(CKA.TOKEN, spec.token)
    .bool(CKA.PRIVATE, spec.isPrivate)
    .bool(CKA.MODIFIABLE, spec.modifiable)
    .bool(CKA.COPYABLE, false)
    .bool(CKA.DESTROYABLE, spec.destroyable)
    .text(CKA.LABEL, spec.identity.label)
    .text(CKA.UNIQUE_ID, spec.uniqueId)
    .ulong(CKA.KEY_TYPE, material.kind === "AES" ? CKK.AES : CKK.GENERIC_SECRET)
    .bytes(CKA.ID, spec.identity.id ?? Buffer.alloc(0))
    .date(CKA.START_DATE, spec.startDate)
    .date(CKA.END_DATE, spec.endDate)
    .bool(CKA.DERIVE, false)
    .bool(CKA.LOCAL, material.generatedBy !== undefined)
    .ulong(CKA.KEY_GEN_MECHANISM, material.generatedBy ?? CK_UNAVAILABLE_INFORMATION)
    .ulongs(CKA.ALLOWED_MECHANISMS, spec.allowedMechanisms)
    .bool(CKA.ENCRYPT, material.can.encrypt)
    .bool(CKA.DECRYPT, material.can.decrypt)
    .bool(CKA.WRAP, material.can.wrap)
    .bool(CKA.UNWRAP, material.can.unwrap)
    .bool(CKA.SIGN, false)
    .bool(CKA.VERIFY, false)
    .bool(CKA.SENSITIVE, material.sensitive)
    .bool(CKA.EXTRACTABLE, material.extractable)
    .bool(CKA.ALWAYS_SENSITIVE, material.alwaysSensitive)
    .bool(CKA.NEVER_EXTRACTABLE, material.neverExtractable)
    .bool(CKA.WRAP_WITH_TRUSTED, false)
    .bool(CKA.TRUSTED, false);
  if (material.length !== undefined) set.ulong(CKA.VALUE_LEN, material.length);
  // The value is readable only for a session key made extractable and not sensitive; a vault key's never is.
  if (material.value && !material.sensitive && material.extractable) set.bytes(CKA.VALUE, material.value);
  else set.sensitive(CKA.VALUE);
  return { handle: spec.handle, kind: "secret", attributes: set };
}

/** Key Vault's name for an oct key's AES algorithms of this size, e.g. 32 -> "A256". */
export const aesPrefix = (length: number): "A128" | "A192" | "A256" => (length === 16 ? "A128" : length === 24 ? "A192" : "A256");

export const GENERATED_BY_AES_KEY_GEN = CKM.AES_KEY_GEN;

/** A Managed HSM AES key as PKCS#11 sees it: sensitive, never extractable, its usage from key_ops. */
export function vaultSecretMaterial(key: VaultKey, length: number | undefined, generated: boolean): SecretMaterial {
  return {
    kind: "AES",
    length,
    can: usageFromKeyOps(key.keyOps),
    key,
    sensitive: true,
    extractable: false,
    alwaysSensitive: true,
    neverExtractable: true,
    ...(generated ? { generatedBy: GENERATED_BY_AES_KEY_GEN } : {}),
  };
}

export const isOctKey = (key: VaultKey): boolean => key.kty === "oct" || key.kty === "oct-HSM";
