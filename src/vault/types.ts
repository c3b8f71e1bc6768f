// The boundary between the PKCS#11 core and Azure. The core asks these questions and never sees the SDK; the
// implementation in src/vault/ answers them with @azure/keyvault-keys and @azure/keyvault-certificates.

export type SignAlgorithm =
  | "RS256" | "RS384" | "RS512"
  // RSNULL: PKCS#1 v1.5 signing of caller-formatted bytes (RFC 2437), e.g. a DigestInfo for a hash RS* lacks.
  | "RSNULL"
  | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "ES512" | "ES256K";
export type DecryptAlgorithm = "RSA-OAEP" | "RSA-OAEP-256" | "RSA1_5";
/** AES in the vault (Managed HSM): GCM, CBC and CBC with PKCS#7 padding. */
export type AesAlgorithm =
  | "A128GCM" | "A192GCM" | "A256GCM"
  | "A128CBC" | "A192CBC" | "A256CBC"
  | "A128CBCPAD" | "A192CBCPAD" | "A256CBCPAD";
export type WrapAlgorithm = "A128KW" | "A192KW" | "A256KW" | "CKM_AES_KEY_WRAP" | "CKM_AES_KEY_WRAP_PAD" | "RSA-OAEP" | "RSA-OAEP-256" | "RSA1_5";

/** One entry of the vault's key listing: what a find can use without fetching each key. */
export interface VaultKeyListing {
  name: string;
  /** https://{vault}/keys/{name} (the listing names no version). */
  kid: string;
  enabled: boolean;
  /** True for a key that backs a vault certificate. */
  managed: boolean;
  tags: Record<string, string>;
  notBefore?: Date;
  expiresOn?: Date;
}

/** A key to create (C_GenerateKeyPair, C_GenerateKey) or import (C_CreateObject). */
export interface NewKeyProperties {
  keyOps: string[];
  tags: Record<string, string>;
  notBefore?: Date;
  expiresOn?: Date;
}

export type NewKeySpec =
  | { kty: "RSA" | "RSA-HSM"; keySize: 2048 | 3072 | 4096; publicExponent?: number }
  | { kty: "EC" | "EC-HSM"; curve: "P-256" | "P-384" | "P-521" | "P-256K" }
  | { kty: "oct-HSM"; keySize: 128 | 192 | 256 };

/** A private key to import, as a JWK with its private parts (RSA n e d p q dp dq qi, or EC crv x y d). */
export interface ImportedKey {
  kty: "RSA" | "RSA-HSM" | "EC" | "EC-HSM";
  n?: Buffer; e?: Buffer; d?: Buffer; p?: Buffer; q?: Buffer; dp?: Buffer; dq?: Buffer; qi?: Buffer;
  crv?: string; x?: Buffer; y?: Buffer;
}

/**
 * A certificate this module stored for a key (C_CreateObject of CKO_CERTIFICATE). Key Vault certificates cannot be
 * bound to an existing key, so it lives in a vault secret tagged with the key it belongs to (docs/vault-tokens.md).
 */
export interface StoredCertificate {
  /** The secret's name. */
  name: string;
  /** The key it belongs to, or undefined for a CA certificate kept on the token. */
  keyName?: string;
  tags: Record<string, string>;
}

export interface VaultKey {
  name: string;
  version: string;
  /** Full key identifier, https://{vault}/keys/{name}/{version}. */
  kid: string;
  vaultUrl: string;
  /** "RSA" | "RSA-HSM" | "EC" | "EC-HSM" | "oct" | "oct-HSM" */
  kty: string;
  /** RSA modulus and exponent, big-endian without leading zero bytes. */
  n?: Buffer;
  e?: Buffer;
  /** "P-256" | "P-384" | "P-521" | "P-256K" */
  crv?: string;
  x?: Buffer;
  y?: Buffer;
  keyOps: string[];
  enabled: boolean;
  notBefore?: Date;
  expiresOn?: Date;
  /** True for a Managed HSM (https://{name}.managedhsm.azure.net). */
  managedHsm: boolean;
  /** The version's tags (PKCS#11 attributes this module stored: docs/vault-tokens.md). */
  tags: Record<string, string>;
  /** oct keys: size in bits when the vault says (Key Vault does, Managed HSM does not). */
  keySize?: number;
}

export type VaultErrorKind =
  | "not-found" // 404 KeyNotFound / CertificateNotFound
  | "forbidden" // 403, including key_ops and disabled-key refusals
  | "bad-parameter" // 400 BadParameter
  | "conflict" // 409, or a create/import whose name is already taken (never overwritten)
  | "auth" // no credential could produce a token, or 401 after a token
  | "throttled" // 429 after retries ran out
  | "network" // connection refused/reset, DNS, TLS
  | "timeout" // the operation's deadline passed
  | "other";

export class VaultError extends Error {
  constructor(
    readonly kind: VaultErrorKind,
    message: string,
    readonly statusCode?: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = "VaultError";
  }
}

export interface VaultBackend {
  getKey(vaultUrl: string, name: string, version?: string): Promise<VaultKey>;
  /** Names of every enabled and disabled key in the vault, following nextLink pages. */
  listKeyNames(vaultUrl: string): Promise<string[]>;
  /** DER of the certificate named like the key, or undefined when the vault has none (404). */
  getCertificate(vaultUrl: string, name: string): Promise<Buffer | undefined>;
  /** Signs a client-computed digest; returns the raw signature (r||s for ECDSA). */
  sign(key: VaultKey, algorithm: SignAlgorithm, digest: Buffer): Promise<Buffer>;
  decrypt(key: VaultKey, algorithm: DecryptAlgorithm, ciphertext: Buffer): Promise<Buffer>;
  /**
   * What the service is: a Managed HSM's host name says so, and so does (for private endpoints and the emulator)
   * the resource of its authentication challenge, https://managedhsm.azure.net. Learned on the first request.
   */
  serviceKind(vaultUrl: string): Promise<"key-vault" | "managed-hsm">;
  /** The vault's keys with their tags, following nextLink pages: one request per page, none per key. */
  listKeys(vaultUrl: string): Promise<VaultKeyListing[]>;
  /** Names of the vault's certificates (a key named like one has that certificate); [] where there are none (Managed HSM). */
  listCertificateNames(vaultUrl: string): Promise<string[]>;
  /** Creates a key under a name not yet taken; a taken name (even soft-deleted) is a "conflict" VaultError. */
  createKey(vaultUrl: string, name: string, spec: NewKeySpec, properties: NewKeyProperties): Promise<VaultKey>;
  /** Imports a private key under a name not yet taken, like createKey. */
  importKey(vaultUrl: string, name: string, key: ImportedKey, properties: NewKeyProperties): Promise<VaultKey>;
  /** Replaces the tags of the key's version `key.version`; returns the key as the vault now has it. */
  updateKeyTags(key: VaultKey, tags: Record<string, string>): Promise<VaultKey>;
  /** Soft-deletes the key (never purges): it stays recoverable under the vault's policy. */
  deleteKey(vaultUrl: string, name: string): Promise<void>;
  /** Certificates this module stored (StoredCertificate); [] where the vault holds no secrets (Managed HSM). */
  listStoredCertificates(vaultUrl: string): Promise<StoredCertificate[]>;
  getStoredCertificate(vaultUrl: string, name: string): Promise<Buffer>;
  storeCertificate(vaultUrl: string, name: string, der: Buffer, tags: Record<string, string>): Promise<void>;
  /** Soft-deletes the stored certificate's secret. */
  deleteStoredCertificate(vaultUrl: string, name: string): Promise<void>;
  /** AES encryption in the vault. GCM: the vault picks the IV and returns it with the tag. CBC: the caller's IV. */
  encryptAes(key: VaultKey, algorithm: AesAlgorithm, plaintext: Buffer, options: { iv?: Buffer; aad?: Buffer }): Promise<{ ciphertext: Buffer; iv?: Buffer; tag?: Buffer }>;
  decryptAes(key: VaultKey, algorithm: AesAlgorithm, ciphertext: Buffer, options: { iv: Buffer; aad?: Buffer; tag?: Buffer }): Promise<Buffer>;
  wrapKey(key: VaultKey, algorithm: WrapAlgorithm, keyBytes: Buffer): Promise<Buffer>;
  unwrapKey(key: VaultKey, algorithm: WrapAlgorithm, wrapped: Buffer): Promise<Buffer>;
  /** Random bytes from a Managed HSM; undefined where the vault does not offer them. */
  getRandomBytes(vaultUrl: string, count: number): Promise<Buffer | undefined>;
  close(): Promise<void>;
}
