// The cryptographic operations behind /sign, /verify, /encrypt, /decrypt, /wrapkey and /unwrapkey, and the
// checks that precede them (enabled, nbf/exp, key_ops, algorithm versus key). node:crypto does the RSA and AES
// work; @noble/curves signs ECDSA over a client-supplied digest, which node:crypto cannot do.
import { constants, createCipheriv, createDecipheriv, createHmac, privateDecrypt, privateEncrypt, publicDecrypt, publicEncrypt, randomBytes, timingSafeEqual, type CipherGCMTypes } from "node:crypto";
import { ecdsa } from "@noble/curves/abstract/weierstrass.js";
import { p256, p384, p521 } from "@noble/curves/nist.js";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { CIPHER_ALGORITHMS, SIGN_ALGORITHMS, type CipherAlgorithmInfo, type SignAlgorithmInfo } from "./algorithms.ts";
import { KeyVaultError, badParameter } from "./errors.ts";
import { nowSeconds, type KeyVersion } from "./keystore.ts";
import { emsaPssEncode, emsaPssVerify } from "./pss.ts";

export type KeyOperation = "sign" | "verify" | "encrypt" | "decrypt" | "wrapKey" | "unwrapKey";

/**
 * noble's curves, with the HMAC of their RFC 6979 nonce generator done by node:crypto instead of noble's JavaScript
 * SHA-2: that HMAC ran ~25 times per signature and cost about a third of it. Same hash, same nonce, same signatures;
 * the Point class (and its precomputed tables) is noble's own.
 */
function withNodeHmac(curve: typeof p256, hashName: "sha256" | "sha384" | "sha512", lowS: boolean): ReturnType<typeof ecdsa> {
  // noble's curve objects carry their hash at run time, but the legacy CurveFn type does not declare it.
  const hash = (curve as { hash?: Parameters<typeof ecdsa>[1] }).hash;
  if (hash?.outputLen === undefined) throw new Error("@noble/curves: the curve object has no hash");
  const hmac = (key: Uint8Array, ...messages: Uint8Array[]): Uint8Array => {
    const mac = createHmac(hashName, key);
    for (const message of messages) mac.update(message);
    return mac.digest();
  };
  return ecdsa(curve.Point, hash, { hmac, lowS });
}

const ECDSA_CURVES = {
  "P-256": withNodeHmac(p256, "sha256", false),
  "P-384": withNodeHmac(p384, "sha384", false),
  "P-521": withNodeHmac(p521, "sha512", false),
  "P-256K": withNodeHmac(secp256k1, "sha256", true),
} as const;

export function warmUpCurves(curves: string[]): void {
  const digest = new Uint8Array(64).fill(1);
  for (const name of new Set(curves)) {
    const curve = ECDSA_CURVES[name as keyof typeof ECDSA_CURVES];
    if (curve) curve.sign(digest.subarray(0, name === "P-521" ? 64 : name === "P-384" ? 48 : 32), curve.utils.randomPrivateKey(), { prehash: false });
  }
}

// DER prefix of DigestInfo { AlgorithmIdentifier(hash, NULL), OCTET STRING digest } for RSASSA-PKCS1-v1_5.
const DIGEST_INFO_PREFIX: Record<NonNullable<SignAlgorithmInfo["hash"]>, Buffer> = {
  sha256: Buffer.from("3031300d060960864801650304020105000420", "hex"),
  sha384: Buffer.from("3041300d060960864801650304020205000430", "hex"),
  sha512: Buffer.from("3051300d060960864801650304020305000440", "hex"),
};

// Operations that stay allowed on an expired key, so data protected earlier can still be read or checked.
const ALLOWED_AFTER_EXPIRY: ReadonlySet<KeyOperation> = new Set(["verify", "decrypt", "unwrapKey"]);

/** Refuses the operation the way the service does: disabled, outside nbf/exp, or not in key_ops. */
export function checkUsable(v: KeyVersion, op: KeyOperation): void {
  if (!v.enabled) throw new KeyVaultError(403, "Forbidden", `Operation ${op} is not allowed on a disabled key.`, "KeyDisabled");
  const now = nowSeconds();
  if (v.nbf !== undefined && now < v.nbf) {
    throw new KeyVaultError(403, "Forbidden", `Operation ${op} is not allowed on a key that is not yet valid (nbf).`, "KeyNotYetValid");
  }
  if (v.exp !== undefined && now >= v.exp && !ALLOWED_AFTER_EXPIRY.has(op)) {
    throw new KeyVaultError(403, "Forbidden", `Operation ${op} is not allowed on an expired key.`, "KeyExpired");
  }
  if (!v.keyOps.includes(op)) throw new KeyVaultError(403, "Forbidden", `Operation ${op} is not permitted on this key.`, "KeyOperationForbidden");
}

function signAlgorithm(v: KeyVersion, alg: unknown, managedHsm: boolean): SignAlgorithmInfo {
  if (typeof alg !== "string" || alg === "") throw badParameter("Property 'alg' is required.");
  const info = SIGN_ALGORITHMS[alg];
  if (!info) throw badParameter(`Invalid signature algorithm: ${alg}`);
  // Managed HSM's own wording for RSNULL (azure-sdk-for-java #26214); its Activity ID suffix is left out.
  if (managedHsm && info.padding === "pkcs1-raw") throw badParameter("Invalid RSA signature algorithm");
  if (info.family !== v.material.family) throw badParameter(`Key and signing algorithm are incompatible. Key type '${v.kty}' cannot be used with algorithm '${alg}'.`);
  if (info.curve && info.curve !== v.material.curve) {
    throw badParameter(`Key and signing algorithm are incompatible. Key uses curve '${v.material.curve}', and algorithm '${alg}' can only be used with curve '${info.curve}'.`);
  }
  return info;
}

function checkDigest(v: KeyVersion, alg: string, info: SignAlgorithmInfo, digest: Buffer): void {
  if (info.digestLength === "pkcs1-payload") {
    const limit = v.material.modulusBits! / 8 - 11;
    if (digest.length === 0 || digest.length > limit) {
      throw badParameter(`Invalid digest length for algorithm ${alg}: expected 1 to ${limit} bytes, got ${digest.length}.`);
    }
    return;
  }
  if (digest.length !== info.digestLength) {
    throw badParameter(`Invalid digest length for algorithm ${alg}: expected ${info.digestLength} bytes, got ${digest.length}.`);
  }
}

/** What the PKCS#1 v1.5 type 1 block carries: the DigestInfo for RS*, the caller's bytes as they are for RSNULL. */
function pkcs1Payload(info: SignAlgorithmInfo, digest: Buffer): Buffer {
  return info.padding === "pkcs1-raw" ? digest : Buffer.concat([DIGEST_INFO_PREFIX[info.hash!], digest]);
}

export function sign(v: KeyVersion, alg: unknown, digest: Buffer, managedHsm = false): Buffer {
  const info = signAlgorithm(v, alg, managedHsm);
  checkDigest(v, alg as string, info, digest);
  const m = v.material;
  if (info.family === "EC") {
    const curve = ECDSA_CURVES[m.curve as keyof typeof ECDSA_CURVES];
    return Buffer.from(curve.sign(digest, m.ecPrivate!, { prehash: false, lowS: true }).toBytes("compact"));
  }
  if (info.padding !== "pss") {
    return privateEncrypt({ key: m.privateKey!, padding: constants.RSA_PKCS1_PADDING }, pkcs1Payload(info, digest));
  }
  const modulusBytes = m.modulusBits! / 8;
  return privateEncrypt({ key: m.privateKey!, padding: constants.RSA_NO_PADDING }, emsaPssEncode(info.hash!, digest, m.modulusBits!, modulusBytes));
}

export function verify(v: KeyVersion, alg: unknown, digest: Buffer, signature: Buffer, managedHsm = false): boolean {
  const info = signAlgorithm(v, alg, managedHsm);
  checkDigest(v, alg as string, info, digest);
  const m = v.material;
  if (info.family === "EC") {
    const curve = ECDSA_CURVES[m.curve as keyof typeof ECDSA_CURVES];
    try {
      return curve.verify(signature, digest, m.ecPublic!, { prehash: false, lowS: false, format: "compact" });
    } catch {
      return false;
    }
  }
  const modulusBytes = m.modulusBits! / 8;
  if (signature.length !== modulusBytes) return false;
  try {
    if (info.padding !== "pss") {
      const recovered = publicDecrypt({ key: m.publicKey!, padding: constants.RSA_PKCS1_PADDING }, signature);
      const expected = pkcs1Payload(info, digest);
      return recovered.length === expected.length && timingSafeEqual(recovered, expected);
    }
    const encoded = publicDecrypt({ key: m.publicKey!, padding: constants.RSA_NO_PADDING }, signature);
    return emsaPssVerify(info.hash!, digest, encoded, m.modulusBits!);
  } catch {
    return false;
  }
}

function cipherAlgorithm(v: KeyVersion, alg: unknown, op: "encrypt" | "wrapKey", managedHsm: boolean): CipherAlgorithmInfo {
  if (typeof alg !== "string" || alg === "") throw badParameter("Property 'alg' is required.");
  const info = CIPHER_ALGORITHMS[alg];
  if (!info || !info.operations.includes(op) || (info.managedHsmOnly && !managedHsm)) {
    throw badParameter(`Invalid algorithm for ${op === "encrypt" ? "encryption" : "key wrapping"}: ${alg}`);
  }
  if (info.family !== v.material.family) throw badParameter(`Key and encryption algorithm are incompatible. Key type '${v.kty}' cannot be used with algorithm '${alg}'.`);
  const keyBits = info.aesKw?.keyBits ?? info.aes?.keyBits;
  if (keyBits !== undefined && keyBits !== v.material.octKey!.length * 8) {
    throw badParameter(`Key and encryption algorithm are incompatible. Algorithm '${alg}' needs a ${keyBits}-bit key; this key has ${v.material.octKey!.length * 8} bits.`);
  }
  return info;
}

/** The symmetric parameters of an encrypt or decrypt request (base64url members iv, aad, tag). */
export interface SymmetricParameters {
  iv?: Buffer;
  aad?: Buffer;
  tag?: Buffer;
}

export interface CipherResult {
  value: Buffer;
  iv?: Buffer;
  tag?: Buffer;
  aad?: Buffer;
}

// RFC 3394 default initial value; RFC 5649's is the alternative initial value a65959a6 followed by the length.
const AES_KW_IV = Buffer.from("a6a6a6a6a6a6a6a6", "hex");
const AES_KWP_IV = Buffer.from("a65959a6", "hex");
const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;

const keyWrapCipher = (key: Buffer, padded: boolean): string => `id-aes${key.length * 8}-wrap${padded ? "-pad" : ""}`;
const aesCipher = (key: Buffer, mode: "gcm" | "cbc"): string => `aes-${key.length * 8}-${mode}`;

function requireLength(value: Buffer | undefined, member: string, length: number, alg: string): Buffer {
  if (!value || value.length !== length) throw badParameter(`Property '${member}' must be ${length} bytes for algorithm ${alg}.`);
  return value;
}

/**
 * encrypt and wrapKey: `op` selects which algorithms are allowed. AES-GCM draws its own 12-byte IV, as Managed HSM
 * does, whatever the request carries (docs/emulator.md says why).
 */
export function encrypt(v: KeyVersion, alg: unknown, plaintext: Buffer, op: "encrypt" | "wrapKey", managedHsm = false, params: SymmetricParameters = {}): CipherResult {
  const info = cipherAlgorithm(v, alg, op, managedHsm);
  const m = v.material;
  if (info.aesKw) {
    if (info.aesKw.padded) {
      if (plaintext.length === 0) throw badParameter("The key to wrap must not be empty.");
      const cipher = createCipheriv(keyWrapCipher(m.octKey!, true), m.octKey!, AES_KWP_IV);
      return { value: Buffer.concat([cipher.update(plaintext), cipher.final()]) };
    }
    if (plaintext.length < 16 || plaintext.length % 8 !== 0) throw badParameter("The key to wrap must be a multiple of 8 bytes and at least 16 bytes long.");
    const cipher = createCipheriv(keyWrapCipher(m.octKey!, false), m.octKey!, AES_KW_IV);
    return { value: Buffer.concat([cipher.update(plaintext), cipher.final()]) };
  }
  if (info.aes?.mode === "gcm") {
    const iv = randomBytes(GCM_IV_BYTES);
    const cipher = createCipheriv(aesCipher(m.octKey!, "gcm") as CipherGCMTypes, m.octKey!, iv, { authTagLength: GCM_TAG_BYTES });
    if (params.aad) cipher.setAAD(params.aad);
    const value = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const result: CipherResult = { value, iv, tag: cipher.getAuthTag() };
    if (params.aad) result.aad = params.aad;
    return result;
  }
  if (info.aes) {
    const iv = requireLength(params.iv, "iv", 16, alg as string);
    if (!info.aes.padded && plaintext.length % 16 !== 0) throw badParameter(`The plaintext for algorithm ${alg as string} must be a multiple of 16 bytes.`);
    const cipher = createCipheriv(aesCipher(m.octKey!, "cbc"), m.octKey!, iv);
    cipher.setAutoPadding(info.aes.padded);
    return { value: Buffer.concat([cipher.update(plaintext), cipher.final()]), iv };
  }
  const rsa = info.rsa!;
  const maxLength = m.modulusBits! / 8 - (rsa.padding === "pkcs1" ? 11 : 2 * (rsa.oaepHash === "sha1" ? 20 : 32) + 2);
  if (plaintext.length > maxLength) throw badParameter(`The value is too long for algorithm ${alg as string}: at most ${maxLength} bytes.`);
  const value =
    rsa.padding === "pkcs1"
      ? publicEncrypt({ key: m.publicKey!, padding: constants.RSA_PKCS1_PADDING }, plaintext)
      : publicEncrypt({ key: m.publicKey!, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: rsa.oaepHash }, plaintext);
  return { value };
}

/** decrypt and unwrapKey. A wrong tag, IV, pad or ciphertext is 400 BadParameter, never output. */
export function decrypt(v: KeyVersion, alg: unknown, ciphertext: Buffer, op: "encrypt" | "wrapKey", managedHsm = false, params: SymmetricParameters = {}): Buffer {
  const info = cipherAlgorithm(v, alg, op, managedHsm);
  const m = v.material;
  const failed = (): KeyVaultError => badParameter(`Decryption failed: the value is not a valid ${alg as string} ciphertext for this key.`);
  if (info.aesKw) {
    try {
      const decipher = createDecipheriv(keyWrapCipher(m.octKey!, info.aesKw.padded), m.octKey!, info.aesKw.padded ? AES_KWP_IV : AES_KW_IV);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch {
      throw failed();
    }
  }
  if (info.aes?.mode === "gcm") {
    const iv = requireLength(params.iv, "iv", GCM_IV_BYTES, alg as string);
    const tag = requireLength(params.tag, "tag", GCM_TAG_BYTES, alg as string);
    try {
      const decipher = createDecipheriv(aesCipher(m.octKey!, "gcm") as CipherGCMTypes, m.octKey!, iv, { authTagLength: GCM_TAG_BYTES });
      if (params.aad) decipher.setAAD(params.aad);
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch {
      throw failed();
    }
  }
  if (info.aes) {
    const iv = requireLength(params.iv, "iv", 16, alg as string);
    if (ciphertext.length === 0 || ciphertext.length % 16 !== 0) throw failed();
    try {
      const decipher = createDecipheriv(aesCipher(m.octKey!, "cbc"), m.octKey!, iv);
      decipher.setAutoPadding(info.aes.padded);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch {
      throw failed();
    }
  }
  const modulusBytes = m.modulusBits! / 8;
  if (ciphertext.length !== modulusBytes) throw failed();
  const rsa = info.rsa!;
  try {
    if (rsa.padding === "oaep") {
      return privateDecrypt({ key: m.privateKey!, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: rsa.oaepHash }, ciphertext);
    }
    // Node 20 refuses RSA_PKCS1_PADDING for private decryption (CVE-2023-46809), so take the raw RSA result and
    // read the EME-PKCS1-v1_5 block (00 02 PS≥8 00 M) here.
    const em = privateDecrypt({ key: m.privateKey!, padding: constants.RSA_NO_PADDING }, ciphertext);
    const separator = em.indexOf(0, 2);
    if (em[0] !== 0 || em[1] !== 2 || separator < 10) throw failed();
    return em.subarray(separator + 1);
  } catch (error) {
    if (error instanceof KeyVaultError) throw error;
    throw failed();
  }
}
