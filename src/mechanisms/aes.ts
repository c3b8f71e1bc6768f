// AES: CKM_AES_CBC, CKM_AES_CBC_PAD and CKM_AES_GCM encryption, and CKM_AES_KEY_WRAP (RFC 3394) and
// CKM_AES_KEY_WRAP_KWP (RFC 5649) wrapping. A Managed HSM key is used in the HSM (A*CBC, A*CBCPAD, A*GCM;
// A*KW and CKM_AES_KEY_WRAP_PAD); a session key with node:crypto. Multi-part calls gather the input and the
// finishing call does the work in one piece: the HSM takes whole messages, and GCM cannot release plaintext
// before its tag is checked anyway.
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from "node:crypto";
import { CKG_IV, CKM, CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Mechanism, MessageParameter } from "../protocol/codec.ts";
import { aesPrefix, type SecretMaterial } from "../token/secret-key.ts";
import type { AesAlgorithm, WrapAlgorithm } from "../vault/types.ts";

export type AesMode = "cbc" | "cbc-pad" | "gcm";
const BLOCK = 16;
/** Managed HSM's GCM: it draws a 12-byte IV and returns a 16-byte tag. */
export const HSM_GCM_IV_BYTES = 12;
export const HSM_GCM_TAG_BYTES = 16;
/** Input one multi-part operation may gather before its finishing call. */
export const MAX_GATHERED_BYTES = 16 * 1024 * 1024;

export interface AesParameters {
  mode: AesMode;
  iv: Buffer;
  aad: Buffer;
  /** GCM tag length in bytes. */
  tagBytes: number;
}

const MODES: Partial<Record<number, AesMode>> = { [CKM.AES_CBC]: "cbc", [CKM.AES_CBC_PAD]: "cbc-pad", [CKM.AES_GCM]: "gcm" };

/** The C_EncryptInit / C_DecryptInit parameter of an AES mechanism. */
export function aesParameters(mechanism: Mechanism): AesParameters {
  const name = mechanismName(mechanism.type);
  const mode = MODES[mechanism.type];
  if (!mode) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${name} is not an AES encryption mechanism`);
  const { parameter } = mechanism;
  if (mode === "gcm") {
    if (parameter.kind !== "gcm") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name} needs a CK_GCM_PARAMS`);
    const { iv, aad, tagBits, ivBits } = parameter;
    if (iv.length === 0 || iv.length > 256 || (ivBits !== 0 && ivBits !== iv.length * 8)) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: an IV of ${iv.length} bytes (ulIvBits ${ivBits}) is not usable`);
    return { mode, iv: Buffer.from(iv), aad: Buffer.from(aad), tagBytes: gcmTagBytes(name, tagBits) };
  }
  if (parameter.kind !== "bytes" || parameter.data.length !== BLOCK) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name} needs a 16-byte IV as its parameter`);
  }
  return { mode, iv: Buffer.from(parameter.data), aad: Buffer.alloc(0), tagBytes: 0 };
}

function gcmTagBytes(name: string, tagBits: number): number {
  // node:crypto (and RFC 5116) take tags of 4 to 16 bytes, whole bytes only.
  if (tagBits % 8 !== 0 || tagBits < 32 || tagBits > 128) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: a tag of ${tagBits} bits is not usable (32 to 128, in whole bytes)`);
  return tagBits / 8;
}

/** Output length for `input` bytes: exact for encryption, an upper bound for CBC_PAD decryption. */
export function aesOutputLength(params: AesParameters, direction: "encrypt" | "decrypt", input: number): number {
  if (params.mode === "gcm") return direction === "encrypt" ? input + params.tagBytes : Math.max(0, input - params.tagBytes);
  if (params.mode === "cbc-pad" && direction === "encrypt") return input + BLOCK - (input % BLOCK);
  return input;
}

/** The checks of a whole input before anything is computed. */
export function checkAesInput(params: AesParameters, direction: "encrypt" | "decrypt", input: Buffer, name: string): void {
  if (params.mode === "cbc" && input.length % BLOCK !== 0) {
    throw new Pkcs11Error(direction === "encrypt" ? CKR.DATA_LEN_RANGE : CKR.ENCRYPTED_DATA_LEN_RANGE, `${name}: ${input.length} bytes is not a whole number of 16-byte blocks (CKM_AES_CBC_PAD pads)`);
  }
  if (params.mode === "cbc-pad" && direction === "decrypt" && (input.length === 0 || input.length % BLOCK !== 0)) {
    throw new Pkcs11Error(CKR.ENCRYPTED_DATA_LEN_RANGE, `${name}: a padded ciphertext is a non-empty whole number of 16-byte blocks, not ${input.length} bytes`);
  }
  if (params.mode === "gcm" && direction === "decrypt" && input.length < params.tagBytes) {
    throw new Pkcs11Error(CKR.ENCRYPTED_DATA_LEN_RANGE, `${name}: ${input.length} bytes cannot hold a ${params.tagBytes}-byte tag`);
  }
}

const cipherName = (mode: AesMode, length: number): string => `aes-${length * 8}-${mode === "gcm" ? "gcm" : "cbc"}`;

/** AES with a session key's bytes. GCM's tag follows the ciphertext, as PKCS#11 lays it out. */
export function localAes(params: AesParameters, direction: "encrypt" | "decrypt", key: Buffer, input: Buffer): Buffer {
  const name = cipherName(params.mode, key.length);
  if (direction === "encrypt") {
    if (params.mode === "gcm") {
      const cipher = createCipheriv(name as CipherGCMTypes, key, params.iv, { authTagLength: params.tagBytes });
      cipher.setAAD(params.aad);
      return Buffer.concat([cipher.update(input), cipher.final(), cipher.getAuthTag()]);
    }
    const cipher = createCipheriv(name, key, params.iv);
    cipher.setAutoPadding(params.mode === "cbc-pad");
    return Buffer.concat([cipher.update(input), cipher.final()]);
  }
  try {
    if (params.mode === "gcm") {
      const decipher = createDecipheriv(name as CipherGCMTypes, key, params.iv, { authTagLength: params.tagBytes });
      decipher.setAAD(params.aad);
      decipher.setAuthTag(input.subarray(input.length - params.tagBytes));
      return Buffer.concat([decipher.update(input.subarray(0, input.length - params.tagBytes)), decipher.final()]);
    }
    const decipher = createDecipheriv(name, key, params.iv);
    decipher.setAutoPadding(params.mode === "cbc-pad");
    return Buffer.concat([decipher.update(input), decipher.final()]);
  } catch (error) {
    throw new Pkcs11Error(CKR.ENCRYPTED_DATA_INVALID, `${params.mode === "gcm" ? "the GCM tag does not match (wrong key, IV, AAD, or tampered data)" : "the padding is wrong (wrong key or IV, or tampered data)"}: ${(error as Error).message}`);
  }
}

/** Key Vault's algorithm for a mode and a key size. */
export function vaultAesAlgorithm(mode: AesMode, length: number): AesAlgorithm {
  return `${aesPrefix(length)}${mode === "gcm" ? "GCM" : mode === "cbc" ? "CBC" : "CBCPAD"}` as AesAlgorithm;
}

// ---- the message API (v3.0): C_EncryptMessage / C_DecryptMessage with CK_GCM_MESSAGE_PARAMS ----------------

export interface MessageParameters {
  iv: Buffer;
  tagBytes: number;
  /** C_EncryptMessage: the module chooses the IV (CKG_GENERATE_RANDOM or CKG_GENERATE). */
  generateIv: boolean;
  /** C_DecryptMessage: the tag to check. */
  tag: Buffer;
}

/**
 * CK_GCM_MESSAGE_PARAMS. Managed HSM draws its own 12-byte IV, so for an HSM key only a module-chosen IV of that
 * size can be honoured; a session key also takes the caller's IV (CKG_NO_GENERATE).
 */
export function messageParameters(parameter: MessageParameter, direction: "encrypt" | "decrypt", inHsm: boolean): MessageParameters {
  if (parameter.kind !== "gcm") throw new Pkcs11Error(CKR.ARGUMENTS_BAD, "CKM_AES_GCM messages need a CK_GCM_MESSAGE_PARAMS");
  const tagBytes = parameter.tagBits / 8;
  if (!Number.isInteger(tagBytes) || tagBytes < 4 || tagBytes > 16 || (inHsm && tagBytes !== HSM_GCM_TAG_BYTES)) {
    throw new Pkcs11Error(CKR.ARGUMENTS_BAD, `CKM_AES_GCM: a ${parameter.tagBits}-bit tag is not usable${inHsm ? " (Managed HSM makes 128-bit tags)" : ""}`);
  }
  if (direction === "decrypt") {
    if (parameter.iv.length === 0) throw new Pkcs11Error(CKR.ARGUMENTS_BAD, "CKM_AES_GCM: C_DecryptMessage needs the message's IV");
    return { iv: Buffer.from(parameter.iv), tagBytes, generateIv: false, tag: Buffer.from(parameter.tag) };
  }
  const generate = parameter.ivGenerator === CKG_IV.GENERATE_RANDOM || parameter.ivGenerator === CKG_IV.GENERATE;
  if (parameter.ivFixedBits !== 0 && generate) throw new Pkcs11Error(CKR.ARGUMENTS_BAD, "CKM_AES_GCM: a fixed IV part is not supported; set ulIvFixedBits to 0");
  if (inHsm) {
    if (!generate || parameter.iv.length !== HSM_GCM_IV_BYTES) {
      throw new Pkcs11Error(CKR.ARGUMENTS_BAD, `CKM_AES_GCM: Managed HSM chooses the IV itself: pass ivGenerator CKG_GENERATE_RANDOM and a ${HSM_GCM_IV_BYTES}-byte pIv for it`);
    }
  } else if (!generate && parameter.ivGenerator !== CKG_IV.NO_GENERATE) {
    throw new Pkcs11Error(CKR.ARGUMENTS_BAD, "CKM_AES_GCM: ivGenerator must be CKG_NO_GENERATE, CKG_GENERATE or CKG_GENERATE_RANDOM");
  }
  if (parameter.iv.length === 0) throw new Pkcs11Error(CKR.ARGUMENTS_BAD, "CKM_AES_GCM: pIv must have room for the IV");
  return { iv: generate ? randomBytes(parameter.iv.length) : Buffer.from(parameter.iv), tagBytes, generateIv: generate, tag: Buffer.alloc(0) };
}

// ---- key wrapping ---------------------------------------------------------------------------------------

export type WrapMode = "kw" | "kwp";

/** CKM_AES_KEY_WRAP / CKM_AES_KEY_WRAP_KWP, with the default IV only (the HSM takes no other). */
export function wrapMode(mechanism: Mechanism): WrapMode {
  const name = mechanismName(mechanism.type);
  const mode: WrapMode | undefined = mechanism.type === CKM.AES_KEY_WRAP ? "kw" : mechanism.type === CKM.AES_KEY_WRAP_KWP ? "kwp" : undefined;
  if (!mode) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${name} does not wrap with an AES key here`);
  const { parameter } = mechanism;
  const defaultIv = mode === "kw" ? "a6a6a6a6a6a6a6a6" : "a65959a6";
  if (parameter.kind === "malformed" || (parameter.kind === "bytes" && parameter.data.toString("hex") !== defaultIv) || parameter.kind === "oaep" || parameter.kind === "gcm") {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: only the default IV of RFC ${mode === "kw" ? 3394 : 5649} is supported`);
  }
  return mode;
}

export function wrappedLength(mode: WrapMode, keyLength: number): number {
  return mode === "kw" ? keyLength + 8 : Math.ceil(keyLength / 8) * 8 + 8;
}

/** RFC 3394 needs whole 8-byte blocks, at least two of them. */
export function checkWrappable(mode: WrapMode, key: Buffer): void {
  if (mode === "kw" && (key.length < 16 || key.length % 8 !== 0)) {
    throw new Pkcs11Error(CKR.KEY_SIZE_RANGE, `CKM_AES_KEY_WRAP wraps keys of whole 8-byte blocks, at least 16 bytes, not ${key.length}; use CKM_AES_KEY_WRAP_KWP`);
  }
}

export function checkUnwrappable(mode: WrapMode, wrapped: Buffer): void {
  if (wrapped.length < 16 || wrapped.length % 8 !== 0) throw new Pkcs11Error(CKR.WRAPPED_KEY_LEN_RANGE, `a ${mode === "kw" ? "RFC 3394" : "RFC 5649"} wrapped key is whole 8-byte blocks, at least 16 bytes, not ${wrapped.length}`);
}

/** Managed HSM's name for the wrap: A*KW for RFC 3394, CKM_AES_KEY_WRAP_PAD for RFC 5649 (docs/emulator.md). */
export function vaultWrapAlgorithm(mode: WrapMode, kekLength: number | undefined): WrapAlgorithm {
  if (mode === "kwp") return "CKM_AES_KEY_WRAP_PAD";
  return kekLength === undefined ? "CKM_AES_KEY_WRAP" : (`${aesPrefix(kekLength)}KW` as WrapAlgorithm);
}

const wrapCipher = (mode: WrapMode, kek: Buffer): { name: string; iv: Buffer } => ({
  name: `id-aes${kek.length * 8}-wrap${mode === "kwp" ? "-pad" : ""}`,
  iv: Buffer.from(mode === "kw" ? "a6a6a6a6a6a6a6a6" : "a65959a6", "hex"),
});

export function localWrap(mode: WrapMode, kek: Buffer, key: Buffer): Buffer {
  const { name, iv } = wrapCipher(mode, kek);
  const cipher = createCipheriv(name, kek, iv);
  return Buffer.concat([cipher.update(key), cipher.final()]);
}

export function localUnwrap(mode: WrapMode, kek: Buffer, wrapped: Buffer): Buffer {
  const { name, iv } = wrapCipher(mode, kek);
  try {
    const decipher = createDecipheriv(name, kek, iv);
    return Buffer.concat([decipher.update(wrapped), decipher.final()]);
  } catch (error) {
    throw new Pkcs11Error(CKR.WRAPPED_KEY_INVALID, `the wrapped key does not unwrap with this key (its integrity check fails): ${(error as Error).message}`);
  }
}

/** The secret key an operation may use: its usage flag, and a size the module knows. */
export function usableSecret(secret: SecretMaterial, flag: "encrypt" | "decrypt" | "wrap" | "unwrap", label: string): number {
  if (!secret.can[flag]) throw new Pkcs11Error(CKR.KEY_FUNCTION_NOT_PERMITTED, `${label}: the key may not ${flag} (CKA_${flag.toUpperCase()} is false)`);
  if (secret.kind !== "AES") throw new Pkcs11Error(CKR.KEY_TYPE_INCONSISTENT, `${label}: a generic secret key cannot ${flag}; AES mechanisms need an AES key`);
  if (secret.length === undefined) throw new Pkcs11Error(CKR.KEY_SIZE_RANGE, `${label}: the HSM did not say how long this AES key is, and no probe could tell (see docs/aes.md)`);
  return secret.length;
}
