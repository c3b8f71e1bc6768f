// A per-key slot and its token: the configured key, its objects once loaded, and the login state its sessions
// share. A passing vault failure (throttling, a reset, a timeout, a 5xx) never sticks: the key is fetched again on
// the next use and in the background, and a certificate the vault failed to serve stays pending, not absent, until
// it does. A key the vault does not have yet leaves the token empty, and C_GenerateKeyPair may create it.
import { createHash } from "node:crypto";
import type { KeySlot } from "../config/types.ts";
import type { Attribute } from "../protocol/codec.ts";
import { VaultError, type ImportedKey, type VaultBackend, type VaultKey } from "../vault/types.ts";
import { log } from "../log/log.ts";
import { CKA, CKO, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { andThen, type Immediate } from "../session/immediate.ts";
import { encodeUlong } from "./attributes.ts";
import { aesLength } from "./aes-length.ts";
import { buildKeyMaterial, type KeyMaterial } from "./key-material.ts";
import { isOctKey, secretKeyObject, vaultSecretMaterial, type SecretMaterial, type SecretObjectSpec } from "./secret-key.ts";
import { buildObjects, objectHandle, type ObjectIdentity, type TokenObject } from "./objects.ts";
import { Backoff, isPassing } from "./retry.ts";
import { ORIGIN_TAG, originOf, tagsWithIdentity } from "./tags.ts";
import { hsmImport, hsmSpec } from "../mechanisms/key-generation.ts";
import { isManagedHsm, type CreatedKey, type FoundObject, type KeyRequest, type LoginState, type Token } from "./token.ts";
import { vaultFailure } from "./vault-errors.ts";

export interface LoadedToken {
  key: VaultKey;
  /** An RSA or EC key's material; an AES key (Managed HSM) has `secret` instead. */
  material?: KeyMaterial;
  secret?: SecretMaterial;
  objects: TokenObject[];
}

/** A use of the token retries a pending certificate at most this often (the background retries back off further). */
const USE_RETRY_GAP_MS = 1_000;
/** Retries on use can fail every second through an outage: warn of the first failure, then once a minute. */
const WARN_AGAIN_MS = 60_000;

export class KeyToken implements Token {
  loginState: LoginState = "public";
  /** Handles of the open sessions on this token. */
  readonly sessions = new Set<number>();
  readonly serial: string;
  model: string;
  private loading: Promise<LoadedToken> | undefined;
  private loaded: LoadedToken | undefined;
  private readonly keyRetry = new Backoff();
  private stopped = false;
  /** The vault answered that the key does not exist (yet): the token has no objects. */
  private absent = false;
  /**
   * Whether the certificate is settled: given by the config, read from the vault, or absent there (404, or 403 for
   * an identity without certificates/get). Any other failure leaves it pending.
   */
  private certificateKnown: boolean;
  private certificateDer: Buffer | undefined;
  private certificateFetch: Promise<void> | undefined;
  private certificateAttemptEnded = 0;
  private certificateWarned = 0;
  private readonly certificateRetry = new Backoff();

  constructor(
    readonly slotId: number,
    readonly slot: KeySlot,
    private readonly backend: VaultBackend,
    private readonly ulongSize: number,
  ) {
    // Stable across restarts and machines, distinct per vault and key.
    this.serial = createHash("sha256").update(`${slot.vaultUrl}/keys/${slot.keyName}`).digest("hex").slice(0, 16);
    this.model = isManagedHsm(slot.vaultUrl) ? "Managed HSM" : "Key Vault";
    this.certificateKnown = Boolean(slot.certificateDer) || slot.certificateFromConfig;
    this.certificateDer = slot.certificateDer;
  }

  get label(): string {
    return this.slot.label;
  }

  get problem(): string | undefined {
    return this.absent && !this.loaded ? `the vault has no key '${this.slot.keyName}': the token is empty until C_GenerateKeyPair creates it` : undefined;
  }

  get description(): string {
    return `${this.model}: ${this.slot.keyName}`;
  }

  /**
   * The loaded key, if it already is: the fast path of every signature. While the certificate is pending, a use
   * also fetches it again (without waiting for it), so that the finds that follow see it once the vault serves it.
   */
  get current(): LoadedToken | undefined {
    if (!this.certificateKnown && this.loaded) this.retryCertificateOnUse();
    return this.loaded;
  }

  /** True while the vault has failed to serve the certificate for a passing reason and retries go on. */
  get certificatePending(): boolean {
    return !this.certificateKnown;
  }

  /** Starts loading in the background; failures are logged by load() and retried on the next use. */
  prefetch(): void {
    this.load().catch(() => undefined);
  }

  /**
   * The key and objects, fetched once with the first attempt at the certificate. A failed fetch is forgotten so
   * that the next call tries again; a passing failure is also retried in the background.
   */
  load(): Promise<LoadedToken> {
    if (this.loaded) return Promise.resolve(this.loaded);
    if (!this.loading) {
      this.keyRetry.cancel();
      this.loading = this.fetch().then(
        (loaded) => {
          this.loaded = loaded;
          this.loading = undefined;
          this.keyRetry.reset();
          return loaded;
        },
        (error: unknown) => {
          this.loading = undefined;
          if (error instanceof VaultError && error.kind === "not-found") {
            if (!this.absent) log.info(`${this.label}: the vault has no key '${this.slot.keyName}' (${error.message}); the token is empty until C_GenerateKeyPair creates it`);
            this.absent = true;
            this.keyRetry.reset();
            throw new Pkcs11Error(CKR.DEVICE_REMOVED, error.message, { logged: true });
          }
          const failure = vaultFailure(error, this.label, "load");
          if (isPassing(error) && !this.stopped) this.keyRetry.failed(() => this.prefetch());
          else this.keyRetry.reset();
          throw failure;
        },
      );
    }
    return this.loading;
  }

  find(template: readonly Attribute[]): Immediate<number[]> {
    return andThen(this.orAbsent(() => this.forFind(template)), (loaded) => (loaded ? loaded.objects.filter((object) => object.attributes.matches(template)).map((object) => object.handle) : []));
  }

  object(handle: number): Immediate<FoundObject> {
    return andThen(this.orAbsent(() => this.current ?? this.load()), (loaded) => {
      const object = loaded?.objects.find((candidate) => candidate.handle === handle);
      if (!object) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID);
      return { object, ...(loaded!.material ? { material: loaded!.material } : {}), ...(loaded!.secret ? { secret: loaded!.secret } : {}) };
    });
  }

  offeredKeys(): Immediate<KeyMaterial | SecretMaterial | "none"> {
    return andThen(this.orAbsent(() => this.current ?? this.load()), (loaded) => loaded?.material ?? loaded?.secret ?? "none");
  }

  /** A key the vault does not have makes an empty token rather than an error. */
  private orAbsent<T>(read: () => Immediate<T>): Immediate<T | undefined> {
    if (this.absent && !this.loaded) return undefined;
    try {
      const value = read();
      return value instanceof Promise ? value.catch((error: unknown) => this.absentOr(error)) : value;
    } catch (error) {
      return this.absentOr(error);
    }
  }

  private absentOr(error: unknown): undefined {
    if (this.absent) return undefined;
    throw error;
  }

  /** Fills an empty per-key slot under its key_name; a slot whose key exists is never rotated. */
  async createKey(request: KeyRequest, imported?: ImportedKey): Promise<CreatedKey> {
    const name = this.slot.keyName;
    // Whether the slot's key exists decides: a load that finds none leaves the slot empty, ready to be filled.
    if (!this.loaded && !this.absent) await this.load().catch(() => undefined);
    if (this.loaded) throw new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, `${this.label}: the slot's key '${name}' exists; a per-key slot is never given a new key (use a vault token: a slot with vault_url and no key_name)`);
    const properties = { ...request.properties, tags: tagsWithIdentity(request.properties.tags, request.identities) };
    let key: VaultKey;
    try {
      // A Managed HSM behind any host name (a private endpoint) makes -HSM keys only: ask what the service is.
      if ((await this.backend.serviceKind(this.slot.vaultUrl)) === "managed-hsm") {
        this.model = "Managed HSM";
        request = { ...request, spec: hsmSpec(request.spec) };
        if (imported) imported = hsmImport(imported);
      }
      key = imported ? await this.backend.importKey(this.slot.vaultUrl, name, imported, properties) : await this.backend.createKey(this.slot.vaultUrl, name, request.spec, properties);
    } catch (error) {
      throw vaultFailure(error, this.label, imported ? "import" : "create");
    }
    this.absent = false;
    this.certificateKnown = true;
    this.loaded = this.build(key);
    log.info(`${this.label}: ${imported ? "imported" : "created"} key ${key.kid} in the slot's empty place '${name}'`);
    return { privateHandle: objectHandle(this.slotId, "private"), publicHandle: objectHandle(this.slotId, "public") };
  }

  createSecretKey(): Promise<number> {
    return Promise.reject(new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, `${this.label}: a per-key slot shows its configured key; make AES token keys on a Managed HSM vault token (a slot with vault_url and no key_name), or set CKA_TOKEN false for a session key`));
  }

  storeCertificate(): Promise<number> {
    return Promise.reject(new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, `${this.label}: a per-key slot shows the certificate of its config or its vault; store certificates on a vault token (a slot with vault_url and no key_name)`));
  }

  setIdentity(handle: number, _change: Partial<ObjectIdentity>): Promise<void> {
    return this.refuseWrite(handle, "modifiable (CKA_MODIFIABLE is false)");
  }

  destroy(handle: number): Promise<void> {
    return this.refuseWrite(handle, "destroyable (CKA_DESTROYABLE is false): delete keys in the vault, or use a vault token");
  }

  private async refuseWrite(handle: number, what: string): Promise<never> {
    await this.object(handle);
    throw new Pkcs11Error(CKR.ACTION_PROHIBITED, `${this.label}: the objects of a per-key slot are not ${what}`);
  }

  /**
   * The objects a C_FindObjectsInit with `template` searches. While the certificate is pending, a find whose
   * template can match it starts a fetch (or joins the one in flight) and waits for it, bounded by the vault call's
   * deadline, so that it sees the certificate as soon as the vault serves it again; a find that names another
   * CKA_CLASS (the usual search for a key before signing) does not wait.
   */
  forFind(template: readonly Attribute[]): Immediate<LoadedToken> {
    const loaded = this.loaded;
    if (!loaded) return this.load();
    if (this.certificateKnown) return loaded;
    const objectClass = template.find((attribute) => attribute.type === CKA.CLASS);
    if (objectClass && !objectClass.value.equals(encodeUlong(CKO.CERTIFICATE, this.ulongSize))) {
      this.retryCertificateOnUse();
      return loaded;
    }
    return this.fetchCertificate().then(() => this.loaded ?? loaded);
  }

  private async fetch(): Promise<LoadedToken> {
    const { slot } = this;
    const started = Date.now();
    // The certificate is asked for at the same time: one round trip, not two, before the first signature.
    const [key] = await Promise.all([this.backend.getKey(slot.vaultUrl, slot.keyName, slot.keyVersion), this.certificateKnown ? undefined : this.fetchCertificate()]);
    // What the service said, not only its host name (private endpoints, the emulator).
    if (key.managedHsm) this.model = "Managed HSM";
    if (isOctKey(key)) {
      // An AES key has no certificate; its size may need a probe (aes-length.ts).
      this.certificateKnown = true;
      const length = await aesLength(this.backend, key, this.label);
      const secret = vaultSecretMaterial(key, length, key.tags[ORIGIN_TAG] === "generated");
      const object = secretKeyObject(secret, { ...this.secretSpec(key), handle: objectHandle(this.slotId, "secret") }, this.ulongSize);
      log.debug(`${this.label}: loaded AES key ${key.kid} (${length === undefined ? "size unknown" : `${length * 8} bits`}) in ${Date.now() - started} ms`);
      return { key, secret, objects: [object] };
    }
    const loaded = this.build(key);
    const material = loaded.material!;
    const certificate = material.certificate ? " with certificate" : this.certificateKnown ? "" : " (certificate pending)";
    log.debug(`${this.label}: loaded ${material.kind} key ${key.kid} (${material.keyBits} bits)${certificate} in ${Date.now() - started} ms`);
    return loaded;
  }

  private secretSpec(key: VaultKey): Omit<SecretObjectSpec, "handle"> {
    return {
      identity: { label: key.name },
      token: true,
      isPrivate: true,
      modifiable: false,
      destroyable: false,
      uniqueId: `${key.vaultUrl}/keys/${key.name}#secret`,
      allowedMechanisms: [],
      ...(key.notBefore ? { startDate: key.notBefore } : {}),
      ...(key.expiresOn ? { endDate: key.expiresOn } : {}),
    };
  }

  /** Objects with deterministic handles (slot*16+kind+1), whether or not the certificate is there yet. */
  private build(key: VaultKey): LoadedToken {
    const material = buildKeyMaterial(key, this.certificateDer, this.label);
    const identity = { label: key.name };
    const objects = buildObjects(
      material,
      {
        handle: (kind, position) => objectHandle(this.slotId, kind, position),
        private: identity,
        public: identity,
        certificate: identity,
        keysWritable: false,
        certificateDestroyable: false,
        uniqueBase: `${key.vaultUrl}/keys/${key.name}`,
        authorities: this.slot.certificateChainDer,
        ...originOf(key.tags),
      },
      this.ulongSize,
    );
    return { key, material, objects };
  }

  /**
   * The application is gone (C_Finalize, or an agent connection that closed): no more background retries, which in
   * an agent would otherwise go on for every process that ever used the token.
   */
  stop(): void {
    this.stopped = true;
    this.keyRetry.cancel();
    this.certificateRetry.cancel();
  }

  private retryCertificateOnUse(): void {
    if (this.certificateFetch || Date.now() - this.certificateAttemptEnded < USE_RETRY_GAP_MS) return;
    void this.fetchCertificate();
  }

  /** One attempt at the certificate named like the key, shared by all who ask meanwhile; never rejects. */
  private fetchCertificate(): Promise<void> {
    this.certificateFetch ??= this.attemptCertificate().finally(() => {
      this.certificateFetch = undefined;
      this.certificateAttemptEnded = Date.now();
    });
    return this.certificateFetch;
  }

  private async attemptCertificate(): Promise<void> {
    this.certificateRetry.cancel();
    const { keyName } = this.slot;
    try {
      // Undefined when the vault has none or refuses to say (404, 403): the token then has no certificate object.
      const der = await this.backend.getCertificate(this.slot.vaultUrl, keyName);
      const failures = this.certificateRetry.failureCount;
      this.certificateRetry.reset();
      this.certificateKnown = true;
      this.certificateDer = der;
      if (failures > 0) log.info(`${this.label}: ${der ? "read certificate" : "the vault has no certificate"} '${keyName}' after ${failures} failed attempt(s)${der ? "; the token shows it now" : ""}`);
      if (this.loaded?.material && der) this.loaded = this.build(this.loaded.key);
    } catch (error) {
      // A key without its certificate still signs; the certificate object comes when a retry succeeds.
      const delay = this.certificateRetry.failed(() => {
        if (this.loaded && !this.stopped) void this.fetchCertificate();
      });
      const reason = error instanceof Error ? error.message : String(error);
      const line = `${this.label}: cannot read certificate '${keyName}' from the vault (${reason}); the token shows no certificate object until a retry succeeds (next in ${delay / 1000} s, or on the next use)`;
      const now = Date.now();
      if (this.certificateRetry.failureCount === 1 || now - this.certificateWarned >= WARN_AGAIN_MS) {
        this.certificateWarned = now;
        log.warn(line);
      } else {
        log.debug(line);
      }
    }
  }
}

