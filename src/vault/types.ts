// The boundary between the PKCS#11 core and Azure. The core asks these questions and never sees the SDK; the
// implementation in src/vault/ answers them with @azure/keyvault-keys and @azure/keyvault-certificates.

export type SignAlgorithm =
  | "RS256" | "RS384" | "RS512"
  // RSNULL: PKCS#1 v1.5 signing of caller-formatted bytes (RFC 2437), e.g. a DigestInfo for a hash RS* lacks.
  | "RSNULL"
  | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "ES512" | "ES256K";
export type DecryptAlgorithm = "RSA-OAEP" | "RSA-OAEP-256" | "RSA1_5";

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
}

export type VaultErrorKind =
  | "not-found" // 404 KeyNotFound / CertificateNotFound
  | "forbidden" // 403, including key_ops and disabled-key refusals
  | "bad-parameter" // 400 BadParameter
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
  /** Random bytes from a Managed HSM; undefined where the vault does not offer them. */
  getRandomBytes(vaultUrl: string, count: number): Promise<Buffer | undefined>;
  close(): Promise<void>;
}
