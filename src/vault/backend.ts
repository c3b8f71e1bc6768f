// The VaultBackend on the Azure SDK. One KeyClient and one CertificateClient per vault, one CryptographyClient per
// key version, all created on first use and reused. Every call carries a deadline, the SDK retries 429/503 (with
// Retry-After) and dropped connections a few times with short back-off, and every failure becomes a VaultError.
import type { TokenCredential } from "@azure/core-auth";
import { logPolicyName, tracingPolicyName, type Pipeline } from "@azure/core-rest-pipeline";
import { CertificateClient } from "@azure/keyvault-certificates";
import { CryptographyClient, KeyClient, type KeyClientOptions, type KeyVaultKey } from "@azure/keyvault-keys";
import { createCredential } from "../auth/index.ts";
import { isLoopbackHost, isManagedHsmHost } from "../config/vaultUrl.ts";
import type { ModuleConfig } from "../config/types.ts";
import { isDebug, log } from "../log/log.ts";
import { deadlineAwareRetryAfterPolicy, startDeadline } from "./deadline.ts";
import { toVaultError } from "./errors.ts";
import { proxyFor } from "./proxy.ts";
import { AgentPool, buildCaList } from "./trust.ts";
import type { AesAlgorithm, DecryptAlgorithm, ImportedKey, NewKeyProperties, NewKeySpec, SignAlgorithm, StoredCertificate, VaultBackend, VaultKey, VaultKeyListing, WrapAlgorithm } from "./types.ts";
import { VaultError } from "./types.ts";

/** Managed HSM hands out at most this many random bytes per request. */
const MAX_RANDOM_BYTES_PER_CALL = 128;
/** Pieces of one large C_GenerateRandom requested at once. */
const RANDOM_PIECES_IN_FLIGHT = 8;

export interface VaultBackendOptions {
  /** Overrides the credential chain (tests, or a host that already has a credential). */
  credential?: TokenCredential;
  /** Environment for the credential chain, NODE_EXTRA_CA_CERTS and the proxy variables. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Build the trust list from env, never from what Node read at the process's start (an agent context). */
  explicitTrust?: boolean;
  /** SDK retry policy. Default: 3 retries, 100 ms doubling to at most 2 s (Retry-After wins when sent). */
  retry?: { maxRetries: number; retryDelayInMs: number; maxRetryDelayInMs: number };
}

interface VaultClients {
  keys: KeyClient;
  certificates?: CertificateClient;
  /** Whether the vault serves getRandomBytes: known for Managed HSM, learned by asking once otherwise. */
  random?: boolean;
}

const DEFAULT_RETRY = { maxRetries: 3, retryDelayInMs: 100, maxRetryDelayInMs: 2000 };

export class AzureVaultBackend implements VaultBackend {
  private readonly agents: AgentPool;
  private readonly env: NodeJS.ProcessEnv;
  private readonly credential: TokenCredential;
  private readonly vaults = new Map<string, VaultClients>();
  private readonly cryptoClients = new Map<string, CryptographyClient>();
  /** Trust per vault: the global ca_file plus the ca_file of every slot on that vault. */
  private readonly caFilesByVault = new Map<string, string[]>();
  private readonly retry: { maxRetries: number; retryDelayInMs: number; maxRetryDelayInMs: number };
  private closed = false;
  /** AZURE_KEYVAULT_PKCS11_DEBUG=sdk: the SDK's per-request log lines are wanted, so its logPolicy stays. */
  private readonly sdkRequestLogging: boolean;

  constructor(
    private readonly config: ModuleConfig,
    options: VaultBackendOptions = {},
  ) {
    const env = options.env ?? process.env;
    this.env = env;
    this.agents = new AgentPool(env, options.explicitTrust);
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.sdkRequestLogging = env.AZURE_KEYVAULT_PKCS11_DEBUG === "sdk";
    for (const slot of config.slots) {
      if (!slot.caFile) continue;
      const files = this.caFilesByVault.get(slot.vaultUrl) ?? [...config.caFiles];
      files.push(slot.caFile);
      this.caFilesByVault.set(slot.vaultUrl, files);
    }
    this.credential = options.credential ?? createCredential(env, { ca: buildCaList(config.caFiles, env, options.explicitTrust), timeoutMs: config.timeoutMs });
  }

  async getKey(vaultUrl: string, name: string, version?: string): Promise<VaultKey> {
    const { keys } = this.clients(vaultUrl);
    const key = await this.call("get key", `key '${name}'${version ? ` version ${version}` : ""} in ${vaultUrl}`, (abortSignal) =>
      keys.getKey(name, { version, abortSignal }),
    );
    return toVaultKey(key, vaultUrl);
  }

  async listKeyNames(vaultUrl: string): Promise<string[]> {
    const { keys } = this.clients(vaultUrl);
    return this.call("list keys", `vault ${vaultUrl}`, async (abortSignal) => {
      const names: string[] = [];
      for await (const properties of keys.listPropertiesOfKeys({ abortSignal })) {
        // Keys that back certificates are listed as managed keys too; they are real keys and sign like any other.
        names.push(properties.name);
      }
      return names;
    });
  }

  async getCertificate(vaultUrl: string, name: string): Promise<Buffer | undefined> {
    const vault = this.clients(vaultUrl);
    vault.certificates ??= this.trimmed(new CertificateClient(vaultUrl, this.credential, this.clientOptions(vaultUrl)));
    const certificates = vault.certificates;
    try {
      const certificate = await this.call("get certificate", `certificate '${name}' in ${vaultUrl}`, (abortSignal) =>
        certificates.getCertificate(name, { abortSignal }),
      );
      return certificate.cer && certificate.cer.length > 0 ? Buffer.from(certificate.cer) : undefined;
    } catch (error) {
      if (error instanceof VaultError && error.kind === "not-found") return undefined;
      if (error instanceof VaultError && error.kind === "forbidden") {
        // Least-privilege identities often lack certificates/get; the key still works without a certificate.
        log.warn(`${error.message}; the token '${name}' gets no certificate object (grant certificates/get, or set certificate_path)`);
        return undefined;
      }
      throw error;
    }
  }

  async sign(key: VaultKey, algorithm: SignAlgorithm, digest: Buffer): Promise<Buffer> {
    const client = this.cryptoClient(key);
    const result = await this.call("sign", `key '${key.name}'`, (abortSignal) => client.sign(algorithm, digest, { abortSignal }));
    return Buffer.from(result.result.buffer, result.result.byteOffset, result.result.byteLength);
  }

  async decrypt(key: VaultKey, algorithm: DecryptAlgorithm, ciphertext: Buffer): Promise<Buffer> {
    const client = this.cryptoClient(key);
    const result = await this.call("decrypt", `key '${key.name}'`, (abortSignal) => client.decrypt({ algorithm, ciphertext }, { abortSignal }));
    return Buffer.from(result.result.buffer, result.result.byteOffset, result.result.byteLength);
  }

  async getRandomBytes(vaultUrl: string, count: number): Promise<Buffer | undefined> {
    const vault = this.clients(vaultUrl);
    const managedHsm = isManagedHsmHost(new URL(vaultUrl).hostname);
    if (vault.random === false) return undefined;
    if (!managedHsm && !isLoopbackHost(new URL(vaultUrl).hostname)) {
      // Standard vaults do not serve /rng; asking would cost a failed round trip to learn nothing.
      vault.random = false;
      return undefined;
    }
    const pieces = Math.ceil(count / MAX_RANDOM_BYTES_PER_CALL);
    const chunks = new Array<Buffer>(pieces);
    // One deadline for the whole C_GenerateRandom, not one per 128-byte piece: a large request fails within the
    // deadline instead of outliving the module's call timeout, and a few pieces at a time keep it short.
    const deadlineAt = Date.now() + this.config.timeoutMs;
    let next = 0;
    let failed = false;
    const fetchPieces = async (): Promise<void> => {
      while (next < pieces && !failed) {
        const index = next++;
        if (Date.now() > deadlineAt) {
          throw new VaultError("timeout", `Key Vault did not produce ${count} random bytes within ${this.config.timeoutMs} ms (AZURE_KEYVAULT_PKCS11_TIMEOUT_MS); ask for fewer per call`);
        }
        const size = Math.min(MAX_RANDOM_BYTES_PER_CALL, count - index * MAX_RANDOM_BYTES_PER_CALL);
        const bytes = await this.call("get random bytes", `vault ${vaultUrl}`, (abortSignal) => vault.keys.getRandomBytes(size, { abortSignal }));
        if (bytes.length !== size) throw new VaultError("other", `Key Vault returned ${bytes.length} random bytes instead of ${size}`);
        chunks[index] = Buffer.from(bytes);
      }
    };
    try {
      await Promise.all(
        Array.from({ length: Math.min(RANDOM_PIECES_IN_FLIGHT, pieces) }, () =>
          fetchPieces().catch((error: unknown) => {
            failed = true;
            throw error;
          }),
        ),
      );
    } catch (error) {
      // A local vault (emulator) that lacks the operation falls back to the OS CSPRNG; a Managed HSM must answer.
      if (!managedHsm && error instanceof VaultError && error.statusCode !== undefined && error.statusCode < 500) {
        log.debug(`${vaultUrl} does not serve random bytes (${error.statusCode}); using the OS CSPRNG`);
        vault.random = false;
        return undefined;
      }
      throw error;
    }
    vault.random = true;
    return Buffer.concat(chunks);
  }

  // ---- filled in by the vault-backend work (contract in src/vault/types.ts) ----
  serviceKind(vaultUrl: string): Promise<"key-vault" | "managed-hsm"> {
    return Promise.resolve(isManagedHsmHost(new URL(vaultUrl).hostname) ? "managed-hsm" : "key-vault");
  }
  listKeys(_vaultUrl: string): Promise<VaultKeyListing[]> {
    return notImplemented("listKeys");
  }
  listCertificateNames(_vaultUrl: string): Promise<string[]> {
    return notImplemented("listCertificateNames");
  }
  createKey(_vaultUrl: string, _name: string, _spec: NewKeySpec, _properties: NewKeyProperties): Promise<VaultKey> {
    return notImplemented("createKey");
  }
  importKey(_vaultUrl: string, _name: string, _key: ImportedKey, _properties: NewKeyProperties): Promise<VaultKey> {
    return notImplemented("importKey");
  }
  updateKeyTags(_key: VaultKey, _tags: Record<string, string>): Promise<VaultKey> {
    return notImplemented("updateKeyTags");
  }
  deleteKey(_vaultUrl: string, _name: string): Promise<void> {
    return notImplemented("deleteKey");
  }
  listStoredCertificates(_vaultUrl: string): Promise<StoredCertificate[]> {
    return notImplemented("listStoredCertificates");
  }
  getStoredCertificate(_vaultUrl: string, _name: string): Promise<Buffer> {
    return notImplemented("getStoredCertificate");
  }
  storeCertificate(_vaultUrl: string, _name: string, _der: Buffer, _tags: Record<string, string>): Promise<void> {
    return notImplemented("storeCertificate");
  }
  deleteStoredCertificate(_vaultUrl: string, _name: string): Promise<void> {
    return notImplemented("deleteStoredCertificate");
  }
  encryptAes(_key: VaultKey, _algorithm: AesAlgorithm, _plaintext: Buffer, _options: { iv?: Buffer; aad?: Buffer }): Promise<{ ciphertext: Buffer; iv?: Buffer; tag?: Buffer }> {
    return notImplemented("encryptAes");
  }
  decryptAes(_key: VaultKey, _algorithm: AesAlgorithm, _ciphertext: Buffer, _options: { iv: Buffer; aad?: Buffer; tag?: Buffer }): Promise<Buffer> {
    return notImplemented("decryptAes");
  }
  wrapKey(_key: VaultKey, _algorithm: WrapAlgorithm, _keyBytes: Buffer): Promise<Buffer> {
    return notImplemented("wrapKey");
  }
  unwrapKey(_key: VaultKey, _algorithm: WrapAlgorithm, _wrapped: Buffer): Promise<Buffer> {
    return notImplemented("unwrapKey");
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cryptoClients.clear();
    this.vaults.clear();
    this.agents.destroy();
  }

  private clients(vaultUrl: string): VaultClients {
    if (this.closed) throw new VaultError("other", "the vault backend is closed");
    let vault = this.vaults.get(vaultUrl);
    if (!vault) {
      vault = { keys: this.trimmed(new KeyClient(vaultUrl, this.credential, this.clientOptions(vaultUrl))) };
      if (isManagedHsmHost(new URL(vaultUrl).hostname)) vault.random = true;
      this.vaults.set(vaultUrl, vault);
    }
    return vault;
  }

  /**
   * Removes the pipeline policies that only cost time here: tracingPolicy opens a span per request for an
   * OpenTelemetry instrumenter the helper never registers, and logPolicy formats request and response lines that
   * only AZURE_KEYVAULT_PKCS11_DEBUG=sdk shows. Measured on the emulator: 0.43 -> 0.39 ms of CPU per signature.
   * The pipeline is the SDK's own `client.pipeline`, which KeyClient itself edits the same way.
   */
  private trimmed<T extends KeyClient | CertificateClient>(client: T): T {
    const pipeline = (client as unknown as { client?: { pipeline?: Pipeline } }).client?.pipeline;
    if (!pipeline) return client;
    pipeline.removePolicy({ name: tracingPolicyName });
    if (!this.sdkRequestLogging) pipeline.removePolicy({ name: logPolicyName });
    return client;
  }

  private clientOptions(vaultUrl: string) {
    const hostname = new URL(vaultUrl).hostname;
    const loopback = isLoopbackHost(hostname);
    if (loopback) log.debug(`${vaultUrl} is a loopback host: challenge resource verification is off`);
    return {
      agent: this.agents.get(this.caFilesByVault.get(vaultUrl) ?? this.config.caFiles, proxyFor(vaultUrl, this.env)) as KeyClientOptions["agent"],
      retryOptions: this.retry,
      additionalPolicies: [{ policy: deadlineAwareRetryAfterPolicy, position: "perRetry" as const }],
      disableChallengeResourceVerification: loopback,
      userAgentOptions: { userAgentPrefix: "azure-keyvault-pkcs11" },
    } satisfies KeyClientOptions;
  }

  private cryptoClient(key: VaultKey): CryptographyClient {
    let client = this.cryptoClients.get(key.kid);
    if (!client) {
      const { keys } = this.clients(key.vaultUrl);
      // Built from a key object that carries neither key material nor key_ops/nbf/exp: the SDK then neither fetches
      // the key again nor tries any operation locally, and the vault alone decides (with its own error messages).
      const remoteOnly = { id: key.kid, name: key.name, properties: { name: key.name, vaultUrl: key.vaultUrl, version: key.version } } as unknown as KeyVaultKey;
      // Sharing the KeyClient's generated client shares its pipeline: one auth challenge per vault, not per key.
      // It is the same (undocumented) option KeyClient.getCryptographyClient uses; without it the SDK builds its own.
      const shared = (keys as unknown as { client?: unknown }).client;
      const options = shared ? ({ generatedClient: shared } as object) : this.clientOptions(key.vaultUrl);
      client = new CryptographyClient(remoteOnly, this.credential, options);
      this.cryptoClients.set(key.kid, client);
    }
    return client;
  }

  private async call<T>(operation: string, target: string, run: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    const { signal: deadline, dispose } = startDeadline(this.config.timeoutMs);
    const started = isDebug() ? performance.now() : 0;
    try {
      const result = await run(deadline);
      if (isDebug()) log.debug(`${operation} ${target}: ok in ${(performance.now() - started).toFixed(1)} ms`);
      return result;
    } catch (error) {
      const vaultError = toVaultError(error, { operation, target, deadline, timeoutMs: this.config.timeoutMs });
      if (isDebug()) {
        log.debug(`${operation} ${target}: ${vaultError.kind}${vaultError.statusCode ? ` ${vaultError.statusCode}` : ""} in ${(performance.now() - started).toFixed(1)} ms`);
      }
      throw vaultError;
    } finally {
      dispose();
    }
  }
}

function toVaultKey(key: KeyVaultKey, vaultUrl: string): VaultKey {
  const jwk = key.key ?? {};
  const buffer = (bytes: Uint8Array | undefined): Buffer | undefined => (bytes && bytes.length > 0 ? Buffer.from(bytes) : undefined);
  const unsigned = (bytes: Uint8Array | undefined): Buffer | undefined => {
    const value = buffer(bytes);
    if (!value) return undefined;
    let start = 0;
    while (start < value.length - 1 && value[start] === 0) start++;
    return value.subarray(start);
  };
  const vaultKey: VaultKey = {
    name: key.name,
    version: key.properties.version ?? "",
    kid: key.id ?? `${vaultUrl}/keys/${key.name}/${key.properties.version ?? ""}`,
    vaultUrl,
    kty: String(key.keyType ?? jwk.kty ?? ""),
    keyOps: (key.keyOperations ?? jwk.keyOps ?? []).map(String),
    enabled: key.properties.enabled ?? true,
    managedHsm: isManagedHsmHost(new URL(vaultUrl).hostname),
    tags: { ...(key.properties.tags ?? {}) },
  };
  const n = unsigned(jwk.n);
  const e = unsigned(jwk.e);
  const x = buffer(jwk.x);
  const y = buffer(jwk.y);
  if (n) vaultKey.n = n;
  if (e) vaultKey.e = e;
  if (jwk.crv) vaultKey.crv = String(jwk.crv);
  if (x) vaultKey.x = x;
  if (y) vaultKey.y = y;
  if (key.properties.notBefore) vaultKey.notBefore = key.properties.notBefore;
  if (key.properties.expiresOn) vaultKey.expiresOn = key.properties.expiresOn;
  return vaultKey;
}

const notImplemented = (what: string): Promise<never> => Promise.reject(new VaultError("other", `${what} is not implemented yet`));
