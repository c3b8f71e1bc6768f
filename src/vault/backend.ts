// The VaultBackend on the Azure SDK. One KeyClient and one CertificateClient per vault, one CryptographyClient per
// key version, all created on first use and reused. Every call carries a deadline, the SDK retries 429/503 (with
// Retry-After) and dropped connections a few times with short back-off, and every failure becomes a VaultError.
import type { TokenCredential } from "@azure/core-auth";
import { logPolicyName, tracingPolicyName, type Pipeline, type PipelinePolicy } from "@azure/core-rest-pipeline";
import { CertificateClient } from "@azure/keyvault-certificates";
import {
  CryptographyClient,
  KeyClient,
  type AesCbcDecryptParameters,
  type AesGcmDecryptParameters,
  type AesGcmEncryptParameters,
  type CreateKeyOptions,
  type JsonWebKey,
  type KeyClientOptions,
  type KeyOperation,
  type KeyVaultKey,
} from "@azure/keyvault-keys";
import { SecretClient } from "@azure/keyvault-secrets";
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

export type ServiceKind = "key-vault" | "managed-hsm";

/** The generated client's setSecret, under SecretClient (see storeCertificate). */
type GeneratedSetSecret = (name: string, parameters: { value: string; contentType?: string; tags?: Record<string, string> }, options: { abortSignal?: AbortSignal }) => Promise<unknown>;

/** Stored certificates (docs/vault-tokens.md): a secret of this content type, tagged with its key or as a CA. */
const CERTIFICATE_CONTENT_TYPE = "application/pkix-cert";
const CERTIFICATE_KEY_TAG = "p11_cert_key";
const CERTIFICATE_AUTHORITY_TAG = "p11_cert_authority";

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
  secrets?: SecretClient;
  /** Whether the vault serves getRandomBytes: known for Managed HSM, learned by asking once otherwise. */
  random?: boolean;
}

const DEFAULT_RETRY = { maxRetries: 3, retryDelayInMs: 100, maxRetryDelayInMs: 2000 };

export class AzureVaultBackend implements VaultBackend {
  private readonly agents: AgentPool;
  private readonly env: NodeJS.ProcessEnv;
  private readonly credential: TokenCredential;
  private readonly vaults = new Map<string, VaultClients>();
  private readonly kindProbes = new Map<string, Promise<ServiceKind>>();
  private readonly cryptoClients = new Map<string, CryptographyClient>();
  /** What each vault's first authentication challenge said it is (its resource), learned by challengePolicy. */
  private readonly learnedKinds = new Map<string, ServiceKind>();
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
    const raw = rawKeySize();
    const key = await this.call("get key", `key '${name}'${version ? ` version ${version}` : ""} in ${vaultUrl}`, (abortSignal) =>
      keys.getKey(name, { version, abortSignal, onResponse: raw.onResponse }),
    );
    return this.toVaultKey(key, vaultUrl, raw.keySize);
  }

  async listKeyNames(vaultUrl: string): Promise<string[]> {
    const { keys } = this.clients(vaultUrl);
    return this.call("list keys", `vault ${vaultUrl}`, async (abortSignal, onResponse) => {
      const names: string[] = [];
      for await (const properties of keys.listPropertiesOfKeys({ abortSignal, onResponse })) {
        // Keys that back certificates are listed as managed keys too; they are real keys and sign like any other.
        names.push(properties.name);
      }
      return names;
    });
  }

  async getCertificate(vaultUrl: string, name: string): Promise<Buffer | undefined> {
    const certificates = this.certificateClient(vaultUrl);
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
    if (vault.random === false) return undefined;
    const managedHsm = (await this.serviceKind(vaultUrl)) === "managed-hsm";
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

  serviceKind(vaultUrl: string): Promise<ServiceKind> {
    const known = this.knownKind(vaultUrl);
    if (known) return Promise.resolve(known);
    // Callers that ask at once (a vault token's three listings) share one probe.
    let probe = this.kindProbes.get(vaultUrl);
    if (!probe) {
      probe = this.probeServiceKind(vaultUrl).finally(() => this.kindProbes.delete(vaultUrl));
      this.kindProbes.set(vaultUrl, probe);
    }
    return probe;
  }

  private async probeServiceKind(vaultUrl: string): Promise<ServiceKind> {
    const { keys } = this.clients(vaultUrl);
    // Nothing has gone to this vault yet: one listing page of one key brings the challenge. What the request
    // itself answers after the challenge (a 403 without keys/list, say) does not matter here.
    try {
      await this.call("learn the service kind", `vault ${vaultUrl}`, async (abortSignal) => {
        for await (const page of keys.listPropertiesOfKeys({ abortSignal }).byPage({ maxPageSize: 1 })) {
          void page;
          break;
        }
      });
    } catch (error) {
      if (!this.learnedKinds.has(vaultUrl)) throw error;
    }
    return this.knownKind(vaultUrl) ?? "key-vault";
  }

  async listKeys(vaultUrl: string): Promise<VaultKeyListing[]> {
    const { keys } = this.clients(vaultUrl);
    return this.call("list keys", `vault ${vaultUrl}`, async (abortSignal, onResponse) => {
      const listing: VaultKeyListing[] = [];
      for await (const properties of keys.listPropertiesOfKeys({ abortSignal, onResponse })) {
        const entry: VaultKeyListing = {
          name: properties.name,
          kid: properties.id ?? `${vaultUrl}/keys/${properties.name}`,
          enabled: properties.enabled ?? true,
          managed: properties.managed ?? false,
          tags: { ...(properties.tags ?? {}) },
        };
        if (properties.notBefore) entry.notBefore = properties.notBefore;
        if (properties.expiresOn) entry.expiresOn = properties.expiresOn;
        listing.push(entry);
      }
      return listing;
    });
  }

  async listCertificateNames(vaultUrl: string): Promise<string[]> {
    if ((await this.serviceKind(vaultUrl)) === "managed-hsm") return [];
    const certificates = this.certificateClient(vaultUrl);
    return this.call("list certificates", `vault ${vaultUrl}`, async (abortSignal, onResponse) => {
      const names: string[] = [];
      for await (const properties of certificates.listPropertiesOfCertificates({ abortSignal, onResponse })) if (properties.name) names.push(properties.name);
      return names;
    });
  }

  async createKey(vaultUrl: string, name: string, spec: NewKeySpec, properties: NewKeyProperties): Promise<VaultKey> {
    const options: CreateKeyOptions = { keyOps: properties.keyOps as KeyOperation[], tags: properties.tags, notBefore: properties.notBefore, expiresOn: properties.expiresOn };
    if ("curve" in spec) {
      options.curve = spec.curve;
    } else {
      // The SDK's createKey sends no public exponent, so the vault's default (65537) is the only one it can make.
      if ("publicExponent" in spec && spec.publicExponent !== undefined && spec.publicExponent !== 65537) {
        throw new VaultError("bad-parameter", `key '${name}': Key Vault creates RSA keys with the public exponent 65537 only, not ${spec.publicExponent}`);
      }
      options.keySize = spec.keySize;
    }
    await this.requireFreeName(vaultUrl, name);
    const { keys } = this.clients(vaultUrl);
    const raw = rawKeySize();
    const key = await this.call("create key", `key '${name}' in ${vaultUrl}`, (abortSignal) => keys.createKey(name, spec.kty, { ...options, abortSignal, onResponse: raw.onResponse })).catch((error: unknown) => {
      throw takenName(error, name, vaultUrl);
    });
    // A Managed HSM does not report an oct key's size, but the size just asked for is the key's.
    return this.toVaultKey(key, vaultUrl, raw.keySize ?? (spec.kty === "oct-HSM" ? spec.keySize : undefined));
  }

  async importKey(vaultUrl: string, name: string, imported: ImportedKey, properties: NewKeyProperties): Promise<VaultKey> {
    const hsm = imported.kty.endsWith("-HSM");
    const jwk: JsonWebKey = { kty: (hsm ? imported.kty.slice(0, -4) : imported.kty) as JsonWebKey["kty"], keyOps: properties.keyOps as KeyOperation[] };
    for (const part of ["n", "e", "d", "p", "q", "dp", "dq", "qi", "x", "y"] as const) {
      const value = imported[part];
      if (value) jwk[part] = new Uint8Array(value);
    }
    if (imported.crv) jwk.crv = imported.crv as JsonWebKey["crv"];
    await this.requireFreeName(vaultUrl, name);
    const { keys } = this.clients(vaultUrl);
    const key = await this.call("import key", `key '${name}' in ${vaultUrl}`, (abortSignal) =>
      keys.importKey(name, jwk, { hardwareProtected: hsm, tags: properties.tags, notBefore: properties.notBefore, expiresOn: properties.expiresOn, abortSignal }),
    ).catch((error: unknown) => {
      throw takenName(error, name, vaultUrl);
    });
    return this.toVaultKey(key, vaultUrl);
  }

  async updateKeyTags(key: VaultKey, tags: Record<string, string>): Promise<VaultKey> {
    const { keys } = this.clients(key.vaultUrl);
    const raw = rawKeySize();
    const updated = await this.call("update key", `key '${key.name}' version ${key.version} in ${key.vaultUrl}`, (abortSignal) =>
      keys.updateKeyProperties(key.name, key.version, { tags, abortSignal, onResponse: raw.onResponse }),
    );
    return this.toVaultKey(updated, key.vaultUrl, raw.keySize ?? key.keySize);
  }

  async deleteKey(vaultUrl: string, name: string): Promise<void> {
    const { keys } = this.clients(vaultUrl);
    // beginDeleteKey returns once the DELETE is answered; the poller's wait for the deletion to complete is not
    // needed (the key is gone from the listing at once) and could outlast the deadline.
    await this.call("delete key", `key '${name}' in ${vaultUrl}`, (abortSignal) => keys.beginDeleteKey(name, { abortSignal }));
  }

  async listStoredCertificates(vaultUrl: string): Promise<StoredCertificate[]> {
    if ((await this.serviceKind(vaultUrl)) === "managed-hsm") return [];
    const secrets = this.secretClient(vaultUrl);
    return this.call("list secrets", `vault ${vaultUrl}`, async (abortSignal, onResponse) => {
      const stored: StoredCertificate[] = [];
      for await (const properties of secrets.listPropertiesOfSecrets({ abortSignal, onResponse })) {
        const tags = properties.tags ?? {};
        if (properties.contentType !== CERTIFICATE_CONTENT_TYPE || properties.managed) continue;
        const keyName = tags[CERTIFICATE_KEY_TAG];
        if (!keyName && tags[CERTIFICATE_AUTHORITY_TAG] !== "1") continue;
        const entry: StoredCertificate = { name: properties.name, tags: { ...tags } };
        if (keyName) entry.keyName = keyName;
        stored.push(entry);
      }
      return stored;
    });
  }

  async getStoredCertificate(vaultUrl: string, name: string): Promise<Buffer> {
    await this.refuseOnManagedHsm(vaultUrl, `certificate '${name}'`);
    const secrets = this.secretClient(vaultUrl);
    const secret = await this.call("get secret", `secret '${name}' in ${vaultUrl}`, (abortSignal) => secrets.getSecret(name, { abortSignal }));
    const value = secret.value ?? "";
    const der = Buffer.from(value, "base64");
    // A secret written by someone else under our tags: say so instead of handing out bytes that are no certificate.
    if (secret.properties.contentType !== CERTIFICATE_CONTENT_TYPE || der.length === 0 || der.toString("base64") !== value.replace(/\s+/g, "")) {
      throw new VaultError("other", `secret '${name}' in ${vaultUrl} does not hold a base64 DER certificate (content type ${secret.properties.contentType ?? "none"})`);
    }
    return der;
  }

  async storeCertificate(vaultUrl: string, name: string, der: Buffer, tags: Record<string, string>): Promise<void> {
    await this.refuseOnManagedHsm(vaultUrl, `certificate '${name}'`);
    const secrets = this.secretClient(vaultUrl);
    // SecretClient.setSecret drops its contentType option (azure-sdk-for-js #38300, 4.10 and 4.11), and
    // updateSecretProperties does too; the generated client it wraps sends it. The SDK is pinned, so its absence
    // would be a new SDK version: refuse then rather than store a certificate no listing would find.
    const generated = (secrets as unknown as { client?: { setSecret?: GeneratedSetSecret } }).client;
    const setSecret = generated?.setSecret?.bind(generated);
    if (!setSecret) throw new VaultError("other", `cannot store certificate '${name}': this @azure/keyvault-secrets cannot set a secret's content type`);
    await this.call("set secret", `secret '${name}' in ${vaultUrl}`, (abortSignal) =>
      setSecret(name, { value: der.toString("base64"), contentType: CERTIFICATE_CONTENT_TYPE, tags }, { abortSignal }),
    );
  }

  async deleteStoredCertificate(vaultUrl: string, name: string): Promise<void> {
    await this.refuseOnManagedHsm(vaultUrl, `certificate '${name}'`);
    const secrets = this.secretClient(vaultUrl);
    // As for keys: the DELETE soft-deletes; the poller's completion is not waited for.
    await this.call("delete secret", `secret '${name}' in ${vaultUrl}`, (abortSignal) => secrets.beginDeleteSecret(name, { abortSignal }));
  }

  async encryptAes(key: VaultKey, algorithm: AesAlgorithm, plaintext: Buffer, options: { iv?: Buffer; aad?: Buffer }): Promise<{ ciphertext: Buffer; iv?: Buffer; tag?: Buffer }> {
    const client = this.cryptoClient(key);
    if (isGcm(algorithm)) {
      if (options.iv) throw new VaultError("bad-parameter", `${algorithm} on key '${key.name}': the vault generates the GCM IV itself; a caller's IV cannot be used`);
      const parameters: AesGcmEncryptParameters = { algorithm, plaintext };
      if (options.aad) parameters.additionalAuthenticatedData = options.aad;
      const result = await this.call("encrypt", `key '${key.name}'`, (abortSignal) => client.encrypt(parameters, { abortSignal }));
      if (!result.iv || !result.authenticationTag) {
        throw new VaultError("other", `Key Vault answered ${algorithm} encryption on key '${key.name}' without ${result.iv ? "a tag" : "an IV"}`);
      }
      return { ciphertext: bytes(result.result), iv: bytes(result.iv), tag: bytes(result.authenticationTag) };
    }
    if (!options.iv) throw new VaultError("bad-parameter", `${algorithm} on key '${key.name}' needs an IV`);
    const iv = options.iv;
    const result = await this.call("encrypt", `key '${key.name}'`, (abortSignal) => client.encrypt({ algorithm, plaintext, iv }, { abortSignal }));
    return { ciphertext: bytes(result.result) };
  }

  async decryptAes(key: VaultKey, algorithm: AesAlgorithm, ciphertext: Buffer, options: { iv: Buffer; aad?: Buffer; tag?: Buffer }): Promise<Buffer> {
    const client = this.cryptoClient(key);
    let parameters: AesGcmDecryptParameters | AesCbcDecryptParameters;
    if (isGcm(algorithm)) {
      if (!options.tag) throw new VaultError("bad-parameter", `${algorithm} on key '${key.name}' needs the authentication tag`);
      parameters = { algorithm, ciphertext, iv: options.iv, authenticationTag: options.tag };
      if (options.aad) parameters.additionalAuthenticatedData = options.aad;
    } else {
      parameters = { algorithm, ciphertext, iv: options.iv };
    }
    const result = await this.call("decrypt", `key '${key.name}'`, (abortSignal) => client.decrypt(parameters, { abortSignal }));
    return bytes(result.result);
  }

  async wrapKey(key: VaultKey, algorithm: WrapAlgorithm, keyBytes: Buffer): Promise<Buffer> {
    const client = this.cryptoClient(key);
    const result = await this.call("wrap key", `key '${key.name}'`, (abortSignal) => client.wrapKey(algorithm, keyBytes, { abortSignal }));
    return bytes(result.result);
  }

  async unwrapKey(key: VaultKey, algorithm: WrapAlgorithm, wrapped: Buffer): Promise<Buffer> {
    const client = this.cryptoClient(key);
    const result = await this.call("unwrap key", `key '${key.name}'`, (abortSignal) => client.unwrapKey(algorithm, wrapped, { abortSignal }));
    return bytes(result.result);
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
      this.vaults.set(vaultUrl, vault);
    }
    return vault;
  }

  private certificateClient(vaultUrl: string): CertificateClient {
    const vault = this.clients(vaultUrl);
    vault.certificates ??= this.trimmed(new CertificateClient(vaultUrl, this.credential, this.clientOptions(vaultUrl)));
    return vault.certificates;
  }

  private secretClient(vaultUrl: string): SecretClient {
    const vault = this.clients(vaultUrl);
    vault.secrets ??= this.trimmed(new SecretClient(vaultUrl, this.credential, this.clientOptions(vaultUrl)));
    return vault.secrets;
  }

  /** The service kind without a request: a Managed HSM or Key Vault host name, else what a challenge said. */
  private knownKind(vaultUrl: string): ServiceKind | undefined {
    const hostname = new URL(vaultUrl).hostname;
    if (isManagedHsmHost(hostname)) return "managed-hsm";
    const learned = this.learnedKinds.get(vaultUrl);
    if (learned) return learned;
    return hostname.toLowerCase().endsWith(".vault.azure.net") ? "key-vault" : undefined;
  }

  /**
   * Reads the resource of each 401 challenge on the way back to the SDK's authentication policy, which sits
   * outside the retry phase and so outside this per-retry policy. A Managed HSM asks for https://managedhsm.azure.net
   * (also behind a private endpoint, and in the emulator's Managed HSM personality).
   */
  private challengePolicy(vaultUrl: string): PipelinePolicy {
    return {
      name: "serviceKindFromChallenge",
      sendRequest: async (request, next) => {
        const response = await next(request);
        if (response.status === 401 && !this.learnedKinds.has(vaultUrl)) {
          const kind = kindFromChallenge(response.headers.get("WWW-Authenticate"));
          if (kind) {
            this.learnedKinds.set(vaultUrl, kind);
            log.debug(`${vaultUrl}: the authentication challenge names a ${kind === "managed-hsm" ? "Managed HSM" : "Key Vault"}`);
          }
        }
        return response;
      },
    };
  }

  /** Keys are never overwritten nor given a new version: the name must be free (GET → 404) before a create. */
  private async requireFreeName(vaultUrl: string, name: string): Promise<void> {
    try {
      await this.getKey(vaultUrl, name);
    } catch (error) {
      if (error instanceof VaultError && error.kind === "not-found") return;
      throw error;
    }
    throw new VaultError("conflict", `key '${name}' already exists in ${vaultUrl}; keys are never overwritten nor given a new version: choose another name (CKA_LABEL)`, 409, "KeyExists");
  }

  private async refuseOnManagedHsm(vaultUrl: string, what: string): Promise<void> {
    if ((await this.serviceKind(vaultUrl)) === "managed-hsm") {
      throw new VaultError("bad-parameter", `Managed HSM stores no certificates (it has no secrets): ${what} cannot be kept in ${vaultUrl}`);
    }
  }

  private toVaultKey(key: KeyVaultKey, vaultUrl: string, keySize?: number): VaultKey {
    return toVaultKey(key, vaultUrl, this.knownKind(vaultUrl) === "managed-hsm", keySize);
  }

  /**
   * Removes the pipeline policies that only cost time here: tracingPolicy opens a span per request for an
   * OpenTelemetry instrumenter the helper never registers, and logPolicy formats request and response lines that
   * only AZURE_KEYVAULT_PKCS11_DEBUG=sdk shows. Measured on the emulator: 0.43 -> 0.39 ms of CPU per signature.
   * The pipeline is the SDK's own `client.pipeline`, which KeyClient itself edits the same way.
   */
  private trimmed<T extends KeyClient | CertificateClient | SecretClient>(client: T): T {
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
      additionalPolicies: [
        { policy: deadlineAwareRetryAfterPolicy, position: "perRetry" as const },
        { policy: this.challengePolicy(vaultUrl), position: "perRetry" as const },
      ],
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

  /**
   * Runs one remote call under the deadline. `onResponse` is for listings: the SDK's pager replaces a refused
   * page's service error ("... does not have keys list permission ...") with "Pagination failed with unexpected
   * statusCode 403", so the last error body it saw is put back on the error.
   */
  private async call<T>(operation: string, target: string, run: (abortSignal: AbortSignal, onResponse: (response: unknown) => void) => Promise<T>): Promise<T> {
    const { signal: deadline, dispose } = startDeadline(this.config.timeoutMs);
    const started = isDebug() ? performance.now() : 0;
    let serviceError: { code?: string; message?: string } | undefined;
    const onResponse = (response: unknown): void => {
      const body = (response as { body?: unknown; parsedBody?: unknown }).body ?? (response as { parsedBody?: unknown }).parsedBody;
      const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      if (error && typeof error.message === "string") serviceError = { code: typeof error.code === "string" ? error.code : undefined, message: error.message };
    };
    try {
      const result = await run(deadline, onResponse);
      if (isDebug()) log.debug(`${operation} ${target}: ok in ${(performance.now() - started).toFixed(1)} ms`);
      return result;
    } catch (error) {
      const rest = error as { statusCode?: unknown; details?: unknown } | null;
      if (serviceError && rest && typeof rest === "object" && typeof rest.statusCode === "number" && rest.details === undefined) rest.details = { error: serviceError };
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

function toVaultKey(key: KeyVaultKey, vaultUrl: string, managedHsm: boolean, keySize?: number): VaultKey {
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
    managedHsm,
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
  if (vaultKey.kty.startsWith("oct")) {
    const size = keySize ?? (jwk.k && jwk.k.length > 0 ? jwk.k.length * 8 : undefined);
    if (size !== undefined) vaultKey.keySize = size;
  }
  return vaultKey;
}

/**
 * The SDK's JsonWebKey drops `key_size`, which a vault may send for oct keys (Managed HSM does not): read it from
 * the response body the SDK hands to onResponse.
 */
export function rawKeySize(): { onResponse: (response: unknown) => void; keySize?: number } {
  const holder: { onResponse: (response: unknown) => void; keySize?: number } = {
    onResponse: (response) => {
      const r = response as { parsedBody?: unknown; body?: unknown; bodyAsText?: string };
      let body = r.parsedBody ?? r.body;
      if (body === undefined && typeof r.bodyAsText === "string") {
        try {
          body = JSON.parse(r.bodyAsText);
        } catch {
          body = undefined;
        }
      }
      const size = (body as { key?: { key_size?: unknown } } | undefined)?.key?.key_size;
      if (typeof size === "number" && Number.isInteger(size) && size > 0) holder.keySize = size;
    },
  };
  return holder;
}

/** The resource (or scope) a 401 challenge names, as a service kind; undefined for a challenge without one (CAE). */
export function kindFromChallenge(header: string | undefined): ServiceKind | undefined {
  if (!header) return undefined;
  const match = /(?:^|[\s,])(?:resource|scope)="([^"]+)"/i.exec(header);
  if (!match) return undefined;
  let host: string;
  try {
    host = new URL(match[1]!).hostname.toLowerCase();
  } catch {
    return undefined;
  }
  // managedhsm.azure.net and the sovereign clouds' managedhsm.* hosts.
  return host === "managedhsm.azure.net" || host.startsWith("managedhsm.") ? "managed-hsm" : "key-vault";
}

/** A create or import refused because the name is soft-deleted (409) becomes the same refusal as a taken name. */
function takenName(error: unknown, name: string, vaultUrl: string): unknown {
  if (error instanceof VaultError && error.kind === "conflict") {
    return new VaultError(
      "conflict",
      `key '${name}' already exists in ${vaultUrl} as a deleted but recoverable key; it is never overwritten: recover it, or choose another name (CKA_LABEL). ${error.message}`,
      error.statusCode,
      error.code,
    );
  }
  return error;
}

const isGcm = (algorithm: AesAlgorithm): algorithm is "A128GCM" | "A192GCM" | "A256GCM" => algorithm.endsWith("GCM");

const bytes = (value: Uint8Array): Buffer => Buffer.from(value.buffer, value.byteOffset, value.byteLength);

