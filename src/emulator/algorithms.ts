// One table for the Key Vault algorithms the emulator serves: which key type and curve each needs, which digest,
// and how node:crypto names it. Every handler asks this table instead of repeating a switch.

export type KeyFamily = "RSA" | "EC" | "oct";

export const KEY_TYPES: Record<string, KeyFamily> = {
  RSA: "RSA",
  "RSA-HSM": "RSA",
  EC: "EC",
  "EC-HSM": "EC",
  oct: "oct",
  "oct-HSM": "oct",
};

export const RSA_SIZES = [2048, 3072, 4096] as const;
export const OCT_SIZES = [128, 192, 256] as const;
/** Key Vault curve name → OpenSSL curve name, and the size of one coordinate in bytes. */
export const CURVES: Record<string, { openssl: string; coordinateBytes: number }> = {
  "P-256": { openssl: "prime256v1", coordinateBytes: 32 },
  "P-384": { openssl: "secp384r1", coordinateBytes: 48 },
  "P-521": { openssl: "secp521r1", coordinateBytes: 66 },
  "P-256K": { openssl: "secp256k1", coordinateBytes: 32 },
};

export interface SignAlgorithmInfo {
  family: "RSA" | "EC";
  /** node:crypto hash name; the digest the client sends must be this hash's length. Absent for RSNULL. */
  hash?: "sha256" | "sha384" | "sha512";
  /** Exact digest length, or for RSNULL the bytes the PKCS#1 type 1 block leaves free (modulus - 11). */
  digestLength: number | "pkcs1-payload";
  /** "pkcs1-raw" is RSNULL: PKCS#1 v1.5 type 1 padding around the caller's bytes, with no DigestInfo added. */
  padding?: "pkcs1" | "pss" | "pkcs1-raw";
  /** ECDSA algorithms are tied to one curve. */
  curve?: string;
}

export const SIGN_ALGORITHMS: Record<string, SignAlgorithmInfo> = {
  RS256: { family: "RSA", hash: "sha256", digestLength: 32, padding: "pkcs1" },
  RS384: { family: "RSA", hash: "sha384", digestLength: 48, padding: "pkcs1" },
  RS512: { family: "RSA", hash: "sha512", digestLength: 64, padding: "pkcs1" },
  // RSNULL (RFC 2437 signing of caller-formatted data, e.g. a SHA-1 DigestInfo or TLS 1.0's MD5+SHA-1).
  RSNULL: { family: "RSA", digestLength: "pkcs1-payload", padding: "pkcs1-raw" },
  PS256: { family: "RSA", hash: "sha256", digestLength: 32, padding: "pss" },
  PS384: { family: "RSA", hash: "sha384", digestLength: 48, padding: "pss" },
  PS512: { family: "RSA", hash: "sha512", digestLength: 64, padding: "pss" },
  ES256: { family: "EC", hash: "sha256", digestLength: 32, curve: "P-256" },
  ES384: { family: "EC", hash: "sha384", digestLength: 48, curve: "P-384" },
  ES512: { family: "EC", hash: "sha512", digestLength: 64, curve: "P-521" },
  ES256K: { family: "EC", hash: "sha256", digestLength: 32, curve: "P-256K" },
};

export interface CipherAlgorithmInfo {
  family: "RSA" | "oct";
  /** RSA: OAEP hash or PKCS#1 v1.5. */
  rsa?: { padding: "oaep"; oaepHash: "sha1" | "sha256" } | { padding: "pkcs1" };
  /**
   * AES key wrap: RFC 3394, or RFC 5649 (`padded`). `keyBits` is the key size the algorithm requires; the CKM_
   * names take any AES key size.
   */
  aesKw?: { keyBits?: number; padded: boolean };
  /** AES-GCM or AES-CBC (`padded`: PKCS#7) with a key of exactly `keyBits`. */
  aes?: { mode: "gcm" | "cbc"; keyBits: number; padded: boolean };
  /** Served by the Managed HSM personality only (the vault answers 400 as for an unknown algorithm). */
  managedHsmOnly?: boolean;
  /** Which key operations may use the algorithm. */
  operations: ReadonlyArray<"encrypt" | "wrapKey">;
}

export const CIPHER_ALGORITHMS: Record<string, CipherAlgorithmInfo> = {
  "RSA-OAEP": { family: "RSA", rsa: { padding: "oaep", oaepHash: "sha1" }, operations: ["encrypt", "wrapKey"] },
  "RSA-OAEP-256": { family: "RSA", rsa: { padding: "oaep", oaepHash: "sha256" }, operations: ["encrypt", "wrapKey"] },
  RSA1_5: { family: "RSA", rsa: { padding: "pkcs1" }, operations: ["encrypt", "wrapKey"] },
  A128KW: { family: "oct", aesKw: { keyBits: 128, padded: false }, operations: ["wrapKey"] },
  A192KW: { family: "oct", aesKw: { keyBits: 192, padded: false }, operations: ["wrapKey"] },
  A256KW: { family: "oct", aesKw: { keyBits: 256, padded: false }, operations: ["wrapKey"] },
  // The SDKs' wrap enums name RFC 5649 only as CKM_AES_KEY_WRAP_PAD (there is no A*KWP in the REST API).
  CKM_AES_KEY_WRAP: { family: "oct", aesKw: { padded: false }, managedHsmOnly: true, operations: ["wrapKey"] },
  CKM_AES_KEY_WRAP_PAD: { family: "oct", aesKw: { padded: true }, managedHsmOnly: true, operations: ["wrapKey"] },
  A128GCM: { family: "oct", aes: { mode: "gcm", keyBits: 128, padded: false }, managedHsmOnly: true, operations: ["encrypt"] },
  A192GCM: { family: "oct", aes: { mode: "gcm", keyBits: 192, padded: false }, managedHsmOnly: true, operations: ["encrypt"] },
  A256GCM: { family: "oct", aes: { mode: "gcm", keyBits: 256, padded: false }, managedHsmOnly: true, operations: ["encrypt"] },
  A128CBC: { family: "oct", aes: { mode: "cbc", keyBits: 128, padded: false }, managedHsmOnly: true, operations: ["encrypt"] },
  A192CBC: { family: "oct", aes: { mode: "cbc", keyBits: 192, padded: false }, managedHsmOnly: true, operations: ["encrypt"] },
  A256CBC: { family: "oct", aes: { mode: "cbc", keyBits: 256, padded: false }, managedHsmOnly: true, operations: ["encrypt"] },
  A128CBCPAD: { family: "oct", aes: { mode: "cbc", keyBits: 128, padded: true }, managedHsmOnly: true, operations: ["encrypt"] },
  A192CBCPAD: { family: "oct", aes: { mode: "cbc", keyBits: 192, padded: true }, managedHsmOnly: true, operations: ["encrypt"] },
  A256CBCPAD: { family: "oct", aes: { mode: "cbc", keyBits: 256, padded: true }, managedHsmOnly: true, operations: ["encrypt"] },
};

/** Key types a Managed HSM creates and imports: only HSM-protected ones. */
export const MANAGED_HSM_KEY_TYPES: ReadonlySet<string> = new Set(["RSA-HSM", "EC-HSM", "oct-HSM"]);

/**
 * Permissions a deny list may name, as Key Vault's access policies spell them ("keys/create" ...), and the
 * data-plane operations each one guards.
 */
export const PERMISSIONS: Record<string, readonly string[]> = {
  "keys/get": ["get-key", "get-deleted-key"],
  "keys/list": ["list-keys", "list-key-versions", "list-deleted-keys"],
  "keys/create": ["create-key"],
  "keys/import": ["import-key"],
  "keys/update": ["update-key"],
  "keys/delete": ["delete-key"],
  "keys/recover": ["recover-deleted-key"],
  "keys/purge": ["purge-deleted-key"],
  "keys/rotate": ["rotate-key"],
  "keys/sign": ["sign"],
  "keys/verify": ["verify"],
  "keys/encrypt": ["encrypt"],
  "keys/decrypt": ["decrypt"],
  "keys/wrapKey": ["wrapkey"],
  "keys/unwrapKey": ["unwrapkey"],
  "secrets/get": ["get-secret", "get-deleted-secret"],
  "secrets/list": ["list-secrets", "list-secret-versions", "list-deleted-secrets"],
  "secrets/set": ["set-secret"],
  "secrets/delete": ["delete-secret"],
  "secrets/recover": ["recover-deleted-secret"],
  "secrets/purge": ["purge-deleted-secret"],
  "certificates/get": ["get-certificate", "get-certificate-operation", "get-certificate-policy"],
  "certificates/list": ["list-certificates", "list-certificate-versions"],
  "certificates/create": ["create-certificate"],
};

export const ALL_KEY_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"] as const;

/** The key_ops a new key gets when the request names none, as the service does. */
export function defaultKeyOps(family: KeyFamily): string[] {
  switch (family) {
    case "RSA":
      return ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"];
    case "EC":
      return ["sign", "verify"];
    case "oct":
      return ["encrypt", "decrypt", "wrapKey", "unwrapKey"];
  }
}
