// A vault token: every key of one vault, each with its private key, public key and certificate objects, and the
// CA certificates stored on it. A vault can hold thousands of keys, so nothing is read per key until it is needed:
// the key listing (names and tags) answers the finds by CKA_CLASS, CKA_LABEL and CKA_ID of tagged keys, and a key's
// public material is read when an attribute or an operation needs it. Keys made, changed or destroyed through
// PKCS#11 change the vault first and then this token's view of it; other processes see the change when they list.
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import type { VaultSlot } from "../config/types.ts";
import { log } from "../log/log.ts";
import { hsmImport, hsmSpec } from "../mechanisms/key-generation.ts";
import { allowedMechanisms } from "../mechanisms/table.ts";
import { CK_CERTIFICATE_CATEGORY, CKA, CKC, CKK, CKO, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Attribute } from "../protocol/codec.ts";
import { andThen, type Immediate } from "../session/immediate.ts";
import { VaultError, type ImportedKey, type NewKeySpec, type StoredCertificate, type VaultBackend, type VaultKey, type VaultKeyListing } from "../vault/types.ts";
import { aesLength } from "./aes-length.ts";
import { AttributeSet } from "./attributes.ts";
import { certificateFields, keyIdentifier } from "./der.ts";
import { VaultHandles } from "./handles.ts";
import { buildKeyMaterial, type KeyMaterial } from "./key-material.ts";
import { authorityLabel, authorityObject, buildObjects, common, type ObjectIdentity, type ObjectKind, type TokenObject } from "./objects.ts";
import { Backoff, isPassing } from "./retry.ts";
import { isOctKey, secretKeyObject, vaultSecretMaterial, type SecretMaterial } from "./secret-key.ts";
import { CERTIFICATE_AUTHORITY_TAG, CERTIFICATE_ID_TAG, CERTIFICATE_KEY_TAG, CERTIFICATE_LABEL_TAG, identityFromTags, idFromTag, idTag, ORIGIN_TAG, originOf, SECRET_LENGTH_TAG, tagsWithIdentity } from "./tags.ts";
import { isManagedHsm, type CreatedKey, type FoundObject, type KeyRequest, type LoginState, type Token } from "./token.ts";
import { vaultFailure } from "./vault-errors.ts";

/** Keys read at once when a find has to look at their public material. */
const LOADS_IN_FLIGHT = 8;
const KEY_NAME = /^[0-9A-Za-z-]{1,127}$/;
// An AES key (Managed HSM) has one object, in the private key's place.
const KIND_OFFSET: Record<Exclude<ObjectKind, "authority">, number> = { private: 0, public: 1, certificate: 2, secret: 0 };
const AUTHORITY_OFFSET = 3;

interface LoadedKey {
  key: VaultKey;
  /** RSA and EC keys; an AES key has `secret` instead. */
  material?: KeyMaterial;
  secret?: SecretMaterial;
  objects: TokenObject[];
}

interface KeyEntry {
  name: string;
  base: number;
  listing: VaultKeyListing;
  /** The key's tags as last read or written (the listing's, then the key's own). */
  tags: Record<string, string>;
  /** A vault certificate has the key's name. */
  vaultCertificate: boolean;
  /** A certificate this module stored for the key. */
  stored?: StoredCertificate;
  loaded?: LoadedKey;
  loading?: Promise<LoadedKey>;
  /** Not shown: gone from the vault, or of a type this module cannot expose. */
  hidden?: string;
}

interface AuthorityEntry {
  stored: StoredCertificate;
  base: number;
  object?: TokenObject;
  loading?: Promise<TokenObject>;
}

export class VaultToken implements Token {
  loginState: LoginState = "public";
  readonly sessions = new Set<number>();
  readonly serial: string;
  model: string;
  private readonly handles: VaultHandles;
  private keys: KeyEntry[] = [];
  private readonly byBase = new Map<number, KeyEntry>();
  private readonly byName = new Map<string, KeyEntry>();
  private authorities: AuthorityEntry[] = [];
  private listed = false;
  private listing: Promise<void> | undefined;
  private readonly listRetry = new Backoff();
  private stopped = false;

  constructor(
    readonly slotId: number,
    readonly slot: VaultSlot,
    private readonly backend: VaultBackend,
    private readonly ulongSize: number,
  ) {
    this.serial = createHash("sha256").update(`${slot.vaultUrl}/keys`).digest("hex").slice(0, 16);
    this.handles = new VaultHandles(slotId);
    this.model = isManagedHsm(slot.vaultUrl) ? "Managed HSM" : "Key Vault";
  }

  get label(): string {
    return this.slot.label;
  }

  get description(): string {
    return `${this.model}: ${new URL(this.slot.vaultUrl).hostname}`;
  }

  readonly problem = undefined;

  get managedHsm(): boolean {
    return this.model === "Managed HSM";
  }

  prefetch(): void {
    Promise.resolve(this.whenListed()).catch(() => undefined);
  }

  stop(): void {
    this.stopped = true;
    this.listRetry.cancel();
  }

  offeredKeys(): "any" {
    return "any";
  }

  // ---- the listing ---------------------------------------------------------------------------------------

  private whenListed(): Immediate<void> {
    if (this.listed) return;
    if (!this.listing) {
      this.listRetry.cancel();
      this.listing = this.fetchListing().then(
        () => {
          this.listed = true;
          this.listing = undefined;
          this.listRetry.reset();
        },
        (error: unknown) => {
          this.listing = undefined;
          if (isPassing(error) && !this.stopped) this.listRetry.failed(() => this.prefetch());
          throw vaultFailure(error, this.label, "list");
        },
      );
    }
    return this.listing;
  }

  private async fetchListing(): Promise<void> {
    const vaultUrl = this.slot.vaultUrl;
    const started = Date.now();
    const [kind, keys, certificateNames, stored] = await Promise.all([
      this.backend.serviceKind(vaultUrl),
      this.backend.listKeys(vaultUrl),
      this.optional(this.backend.listCertificateNames(vaultUrl), "certificates/list", "its keys' vault certificates"),
      this.optional(this.backend.listStoredCertificates(vaultUrl), "secrets/list", "the certificates stored through PKCS#11"),
    ]);
    this.model = kind === "managed-hsm" ? "Managed HSM" : "Key Vault";
    const certificates = new Set(certificateNames.map((name) => name.toLowerCase()));
    const storedByKey = new Map<string, StoredCertificate>();
    const authorities: StoredCertificate[] = [];
    for (const certificate of stored) {
      if (certificate.keyName !== undefined) storedByKey.set(certificate.keyName.toLowerCase(), certificate);
      else authorities.push(certificate);
    }
    // Sorted, so that handle collisions resolve the same way in every process that sees the same keys.
    for (const listing of [...keys].sort((a, b) => compareNames(a.name, b.name))) {
      this.addKey(listing, certificates.has(listing.name.toLowerCase()), storedByKey.get(listing.name.toLowerCase()));
    }
    for (const certificate of authorities.sort((a, b) => compareNames(a.name, b.name))) this.addAuthority(certificate);
    log.debug(`${this.label}: ${this.keys.length} key(s), ${certificates.size} vault certificate(s), ${stored.length} stored certificate(s) in ${vaultUrl} (${this.model}), listed in ${Date.now() - started} ms`);
  }

  /** A listing the identity may not read leaves that part of the token empty, with one warning. */
  private async optional<T>(listing: Promise<T[]>, permission: string, what: string): Promise<T[]> {
    try {
      return await listing;
    } catch (error) {
      if (error instanceof VaultError && error.kind === "forbidden") {
        log.warn(`${this.label}: the vault refused to list ${what} (${error.message}); the token shows none (grant ${permission})`);
        return [];
      }
      throw error;
    }
  }

  private addKey(listing: VaultKeyListing, vaultCertificate: boolean, stored: StoredCertificate | undefined): KeyEntry {
    const entry: KeyEntry = { name: listing.name, base: this.handles.base(listing.name), listing, tags: { ...listing.tags }, vaultCertificate };
    if (stored) entry.stored = stored;
    // The listing adds its keys in order, so the search from the end stops at once; a key made later finds its place.
    let at = this.keys.length;
    while (at > 0 && compareNames(this.keys[at - 1]!.name, entry.name) > 0) at--;
    this.keys.splice(at, 0, entry);
    this.byBase.set(entry.base, entry);
    this.byName.set(entry.name.toLowerCase(), entry);
    return entry;
  }

  private addAuthority(stored: StoredCertificate): AuthorityEntry {
    const entry: AuthorityEntry = { stored, base: this.handles.base(`\0authority:${stored.name}`) };
    this.authorities.push(entry);
    return entry;
  }

  private forget(entry: KeyEntry, why: string): void {
    entry.hidden = why;
    this.keys = this.keys.filter((candidate) => candidate !== entry);
    this.byBase.delete(entry.base);
    this.byName.delete(entry.name.toLowerCase());
  }

  // ---- finding -------------------------------------------------------------------------------------------

  find(template: readonly Attribute[]): Immediate<number[]> {
    return andThen(this.whenListed(), () => {
      const pending = new Set<KeyEntry>();
      const pendingAuthorities = new Set<AuthorityEntry>();
      this.match(template, pending, pendingAuthorities);
      if (pending.size === 0 && pendingAuthorities.size === 0) return this.readAhead(this.match(template));
      return this.loadAll([...pending], [...pendingAuthorities]).then(() => this.match(template));
    });
  }

  /**
   * A find that narrowed the token to a few keys is usually followed by their attributes or an operation: their
   * reads start now, in the background, so that the next call finds them loaded or in flight.
   */
  private readAhead(handles: number[]): number[] {
    const entries = new Set(handles.map((handle) => this.byBase.get(VaultHandles.baseOf(handle))).filter((entry): entry is KeyEntry => entry !== undefined && !entry.loaded));
    if (entries.size > 0 && entries.size <= LOADS_IN_FLIGHT) {
      for (const entry of entries) Promise.resolve(this.loadKey(entry)).catch(() => undefined);
    }
    return handles;
  }

  /**
   * The handles that match, in key order. Objects whose key is not read yet are decided from the listing where it
   * can; the rest go into `pending` (when given) and are left out of this answer.
   */
  private match(template: readonly Attribute[], pending?: Set<KeyEntry>, pendingAuthorities?: Set<AuthorityEntry>): number[] {
    const handles: number[] = [];
    for (const entry of this.keys) {
      if (entry.loaded) {
        for (const object of entry.loaded.objects) if (object.attributes.matches(template)) handles.push(object.handle);
        continue;
      }
      const kinds = this.kindsOf(entry);
      if (!kinds) {
        // A Managed HSM key made elsewhere may be RSA, EC or AES: only reading it tells which objects it has.
        pending?.add(entry);
        continue;
      }
      for (const kind of kinds) {
        const decision = this.skeleton(entry, kind).decide(template);
        if (decision === true) handles.push(entry.base + KIND_OFFSET[kind]);
        else if (decision === undefined) pending?.add(entry);
      }
    }
    for (const authority of this.authorities) {
      const decision = authority.object ? authority.object.attributes.matches(template) : this.authoritySkeleton(authority).decide(template);
      if (decision === true) handles.push(authority.base + AUTHORITY_OFFSET);
      else if (decision === undefined) pendingAuthorities?.add(authority);
    }
    return handles;
  }

  /** Reads the keys a find needs, a few at a time; a key gone or unusable drops out, other failures fail the find. */
  private async loadAll(entries: KeyEntry[], authorities: AuthorityEntry[]): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < entries.length) {
        const entry = entries[next++]!;
        try {
          await this.loadKey(entry);
        } catch (error) {
          if (!entry.hidden) throw error;
        }
      }
    };
    await Promise.all([...Array.from({ length: Math.min(LOADS_IN_FLIGHT, entries.length) }, worker), ...authorities.map((authority) => this.loadAuthority(authority))]);
  }

  /** The objects a key has, as far as the listing tells; undefined when only reading the key can. */
  private kindsOf(entry: KeyEntry): Array<Exclude<ObjectKind, "authority">> | undefined {
    if (entry.tags[SECRET_LENGTH_TAG] !== undefined) return ["secret"];
    // Key Vault vaults hold RSA and EC keys only; on a Managed HSM only this module's tags tell.
    if (this.managedHsm && entry.tags[ORIGIN_TAG] === undefined) return undefined;
    return entry.vaultCertificate || entry.stored ? ["private", "public", "certificate"] : ["private", "public"];
  }

  private identity(entry: KeyEntry, kind: Exclude<ObjectKind, "authority">): ObjectIdentity {
    if (kind === "secret") return identityFromTags(entry.tags, "private", entry.name);
    if (kind !== "certificate") return identityFromTags(entry.tags, kind, entry.name);
    const own = identityFromTags(entry.tags, "private", entry.name);
    const tags = entry.stored?.tags;
    if (!tags) return own;
    const id = idFromTag(tags[CERTIFICATE_ID_TAG]) ?? own.id;
    return { label: tags[CERTIFICATE_LABEL_TAG] ?? own.label, ...(id ? { id } : {}) };
  }

  /** What the listing tells of an object before its key is read. */
  private skeleton(entry: KeyEntry, kind: Exclude<ObjectKind, "authority">): AttributeSet {
    const identity = this.identity(entry, kind);
    const objectClass = kind === "private" ? CKO.PRIVATE_KEY : kind === "public" ? CKO.PUBLIC_KEY : kind === "secret" ? CKO.SECRET_KEY : CKO.CERTIFICATE;
    const secretOrPrivate = kind === "private" || kind === "secret";
    const set = common(new AttributeSet(this.ulongSize), objectClass, secretOrPrivate, identity.label, `${this.uniqueBase(entry)}#${kind}`, kind !== "certificate", secretOrPrivate || (kind === "certificate" && Boolean(entry.stored)));
    if (identity.id) set.bytes(CKA.ID, identity.id);
    if (kind === "secret") {
      set.ulong(CKA.KEY_TYPE, CKK.AES);
      const length = Number(entry.tags[SECRET_LENGTH_TAG]);
      if (Number.isInteger(length)) set.ulong(CKA.VALUE_LEN, length);
    }
    if (kind === "certificate") set.ulong(CKA.CERTIFICATE_TYPE, CKC.X_509).ulong(CKA.CERTIFICATE_CATEGORY, CK_CERTIFICATE_CATEGORY.TOKEN_USER);
    return set;
  }

  private authoritySkeleton(authority: AuthorityEntry): AttributeSet {
    const { tags } = authority.stored;
    const set = new AttributeSet(this.ulongSize)
      .ulong(CKA.CLASS, CKO.CERTIFICATE)
      .bool(CKA.TOKEN, true)
      .bool(CKA.PRIVATE, false)
      .ulong(CKA.CERTIFICATE_TYPE, CKC.X_509)
      .ulong(CKA.CERTIFICATE_CATEGORY, CK_CERTIFICATE_CATEGORY.AUTHORITY);
    if (tags[CERTIFICATE_LABEL_TAG] !== undefined) set.text(CKA.LABEL, tags[CERTIFICATE_LABEL_TAG]);
    const id = idFromTag(tags[CERTIFICATE_ID_TAG]);
    if (id) set.bytes(CKA.ID, id);
    return set;
  }

  private uniqueBase(entry: KeyEntry): string {
    return `${this.slot.vaultUrl}/keys/${entry.name}`;
  }

  // ---- objects -------------------------------------------------------------------------------------------

  object(handle: number): Immediate<FoundObject> {
    return andThen(this.whenListed(), () => {
      const authority = this.authorities.find((candidate) => candidate.base + AUTHORITY_OFFSET === handle);
      if (authority) return andThen(this.loadAuthority(authority), (object) => ({ object }));
      const entry = this.byBase.get(VaultHandles.baseOf(handle));
      if (!entry) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID);
      return andThen(this.loadKey(entry), (loaded) => {
        const object = loaded.objects.find((candidate) => candidate.handle === handle);
        if (!object) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID);
        return { object, ...(loaded.material ? { material: loaded.material } : {}), ...(loaded.secret ? { secret: loaded.secret } : {}) };
      });
    });
  }

  private loadKey(entry: KeyEntry): Immediate<LoadedKey> {
    if (entry.loaded) return entry.loaded;
    if (entry.hidden) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID);
    entry.loading ??= this.fetchKey(entry).finally(() => {
      entry.loading = undefined;
    });
    return entry.loading;
  }

  private async fetchKey(entry: KeyEntry): Promise<LoadedKey> {
    const vaultUrl = this.slot.vaultUrl;
    const where = `${this.label}/${entry.name}`;
    let key: VaultKey;
    let certificate: Buffer | undefined;
    try {
      [key, certificate] = await Promise.all([
        this.backend.getKey(vaultUrl, entry.name),
        this.certificateOf(entry),
      ]);
    } catch (error) {
      if (error instanceof VaultError && error.kind === "not-found") {
        this.forget(entry, "deleted");
        log.info(`${where}: the key is no longer in the vault; its objects are gone from the token`);
        throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, error.message, { logged: true });
      }
      throw vaultFailure(error, where, "load");
    }
    if (isOctKey(key)) {
      let length: number | undefined;
      try {
        length = await aesLength(this.backend, key, where);
      } catch (error) {
        throw vaultFailure(error, where, "load");
      }
      entry.tags = { ...key.tags };
      entry.loaded = this.buildSecret(entry, key, length);
      return entry.loaded;
    }
    try {
      entry.loaded = this.build(entry, key, certificate);
    } catch (error) {
      // A key of a type PKCS#11 cannot be given here (an oct key on a vault, say) is left out of the token.
      this.forget(entry, "unusable");
      log.debug(`${where}: not shown: ${error instanceof Error ? error.message : String(error)}`);
      throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, String(error), { logged: true });
    }
    entry.tags = { ...key.tags };
    return entry.loaded;
  }

  /**
   * The key's certificate, if the listing said it has one. A stored certificate that is gone since (replaced or
   * destroyed by another process) leaves the key without one; it never hides the key.
   */
  private async certificateOf(entry: KeyEntry): Promise<Buffer | undefined> {
    const vaultUrl = this.slot.vaultUrl;
    if (entry.stored) {
      try {
        return await this.backend.getStoredCertificate(vaultUrl, entry.stored.name);
      } catch (error) {
        if (!(error instanceof VaultError && error.kind === "not-found")) throw error;
        log.info(`${this.label}/${entry.name}: the stored certificate '${entry.stored.name}' is gone from the vault; the key shows without it`);
        entry.stored = undefined;
      }
    }
    return entry.vaultCertificate ? this.backend.getCertificate(vaultUrl, entry.name) : undefined;
  }

  private build(entry: KeyEntry, key: VaultKey, certificate: Buffer | undefined): LoadedKey {
    const material = buildKeyMaterial(key, certificate, `${this.label}/${entry.name}`);
    entry.tags = { ...key.tags };
    const objects = buildObjects(
      material,
      {
        handle: (kind) => entry.base + (kind === "authority" ? AUTHORITY_OFFSET : KIND_OFFSET[kind]),
        private: this.identity(entry, "private"),
        public: this.identity(entry, "public"),
        certificate: this.identity(entry, "certificate"),
        keysWritable: true,
        certificateDestroyable: Boolean(entry.stored),
        uniqueBase: this.uniqueBase(entry),
        ...originOf(key.tags),
      },
      this.ulongSize,
    );
    return { key, material, objects };
  }

  private buildSecret(entry: KeyEntry, key: VaultKey, length: number | undefined): LoadedKey {
    const secret = vaultSecretMaterial(key, length, key.tags[ORIGIN_TAG] === "generated");
    const object = secretKeyObject(
      secret,
      {
        handle: entry.base + KIND_OFFSET.secret,
        identity: this.identity(entry, "secret"),
        token: true,
        isPrivate: true,
        modifiable: true,
        destroyable: true,
        uniqueId: `${this.uniqueBase(entry)}#secret`,
        allowedMechanisms: allowedMechanisms(secret, "secret"),
        ...(key.notBefore ? { startDate: key.notBefore } : {}),
        ...(key.expiresOn ? { endDate: key.expiresOn } : {}),
      },
      this.ulongSize,
    );
    return { key, secret, objects: [object] };
  }

  /** C_GenerateKey with CKA_TOKEN true: an AES key in the Managed HSM, its size and identity in tags. */
  async createSecretKey(request: KeyRequest): Promise<number> {
    await this.whenListed();
    if (!this.managedHsm) throw new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, `${this.label}: Key Vault vaults hold no AES keys; make token AES keys on a Managed HSM, or set CKA_TOKEN false for a session key`);
    const name = this.nameFor(request);
    const spec = request.spec as Extract<NewKeySpec, { kty: "oct-HSM" }>;
    const tags = { ...tagsWithIdentity(request.properties.tags, { private: request.identities.private }), [SECRET_LENGTH_TAG]: String(spec.keySize / 8) };
    let key: VaultKey;
    try {
      key = await this.backend.createKey(this.slot.vaultUrl, name, spec, { ...request.properties, tags });
    } catch (error) {
      throw vaultFailure(error, `${this.label}/${name}`, "create");
    }
    const entry = this.addKey({ name: key.name, kid: `${this.slot.vaultUrl}/keys/${key.name}`, enabled: key.enabled, managed: false, tags: key.tags }, false, undefined);
    entry.tags = { ...key.tags };
    entry.loaded = this.buildSecret(entry, key, spec.keySize / 8);
    log.info(`${this.label}: created ${spec.keySize}-bit AES key ${key.kid}`);
    return entry.base + KIND_OFFSET.secret;
  }

  private loadAuthority(authority: AuthorityEntry): Immediate<TokenObject> {
    if (authority.object) return authority.object;
    authority.loading ??= this.backend.getStoredCertificate(this.slot.vaultUrl, authority.stored.name).then(
      (der) => {
        authority.loading = undefined;
        const { tags } = authority.stored;
        const id = idFromTag(tags[CERTIFICATE_ID_TAG]);
        const identity = { label: tags[CERTIFICATE_LABEL_TAG] ?? authorityLabel(new X509Certificate(der)), ...(id ? { id } : {}) };
        authority.object = authorityObject(authority.base + AUTHORITY_OFFSET, der, identity, `${this.slot.vaultUrl}/secrets/${authority.stored.name}`, this.ulongSize, true);
        return authority.object;
      },
      (error: unknown) => {
        authority.loading = undefined;
        throw vaultFailure(error, `${this.label}/${authority.stored.name}`, "load");
      },
    );
    return authority.loading;
  }

  // ---- changes -------------------------------------------------------------------------------------------

  async createKey(request: KeyRequest, imported?: ImportedKey): Promise<CreatedKey> {
    await this.whenListed();
    // The listing has learned what the service is: a Managed HSM behind any host name makes -HSM keys only.
    if (this.managedHsm) {
      request = { ...request, spec: hsmSpec(request.spec) };
      if (imported) imported = hsmImport(imported);
    }
    const name = this.nameFor(request);
    const properties = { ...request.properties, tags: tagsWithIdentity(request.properties.tags, request.identities) };
    let key: VaultKey;
    try {
      key = imported ? await this.backend.importKey(this.slot.vaultUrl, name, imported, properties) : await this.backend.createKey(this.slot.vaultUrl, name, request.spec, properties);
    } catch (error) {
      throw vaultFailure(error, `${this.label}/${name}`, imported ? "import" : "create");
    }
    const entry = this.addKey({ name: key.name, kid: `${this.slot.vaultUrl}/keys/${key.name}`, enabled: key.enabled, managed: false, tags: key.tags }, false, undefined);
    entry.loaded = this.build(entry, key, undefined);
    log.info(`${this.label}: ${imported ? "imported" : "created"} ${key.kty} key ${key.kid}`);
    return { privateHandle: entry.base + KIND_OFFSET.private, publicHandle: entry.base + KIND_OFFSET.public };
  }

  /** The label when it is a Key Vault name nobody has taken here; otherwise a fresh name built from it. */
  private nameFor(request: KeyRequest): string {
    const wanted = request.preferredName;
    if (wanted !== undefined && KEY_NAME.test(wanted)) {
      // Never overwritten, never rotated: a taken name is refused (the vault is asked too, in createKey).
      if (this.byName.has(wanted.toLowerCase())) {
        const message = `a key named '${wanted}' already exists in ${this.slot.vaultUrl}; it is never overwritten: choose another CKA_LABEL`;
        log.error(`${this.label}: ${message} -> CKR_ATTRIBUTE_VALUE_INVALID`);
        throw new Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, message, { logged: true });
      }
      return wanted;
    }
    const base = (request.identities.private.label ?? "").replace(/[^0-9A-Za-z-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 100) || "pkcs11-key";
    return `${base}-${randomBytes(4).toString("hex")}`;
  }

  async storeCertificate(der: Buffer, identity: Partial<ObjectIdentity>): Promise<number> {
    await this.whenListed();
    if (this.managedHsm) {
      throw new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, `${this.label}: Managed HSM stores no certificates; give the token its certificate with certificate_path on a per-key slot`);
    }
    const parsed = new X509Certificate(der);
    const fields = certificateFields(der);
    const entry = await this.keyOfCertificate(fields.subjectPublicKeyInfo, identity);
    if (!entry) {
      if (!parsed.ca) {
        throw new Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, `${this.label}: the certificate for '${parsed.subject.replace(/\n/g, ", ")}' holds the public key of no key on this token (a CA certificate, with basicConstraints CA:TRUE, would be kept as an authority certificate)`);
      }
      return this.storeAuthority(der, parsed, fields.subjectPublicKeyInfo, identity);
    }
    const own = this.identity(entry, "private");
    let name = entry.stored?.name ?? storedCertificateName(entry.name);
    const tags: Record<string, string> = { [CERTIFICATE_KEY_TAG]: entry.name, [CERTIFICATE_LABEL_TAG]: identity.label ?? own.label };
    const id = identity.id ?? own.id;
    if (id) tags[CERTIFICATE_ID_TAG] = id.toString("hex");
    try {
      try {
        await this.backend.storeCertificate(this.slot.vaultUrl, name, der, tags);
      } catch (error) {
        // A certificate replaced by destroy + create (keytool -importcert) leaves the old secret soft-deleted, and a
        // soft-deleted name cannot be set again: store under a fresh name, as listings find the secret by its tags.
        if (!(error instanceof VaultError && error.kind === "conflict")) throw error;
        name = `${name.slice(0, 118)}-${randomBytes(4).toString("hex")}`;
        await this.backend.storeCertificate(this.slot.vaultUrl, name, der, tags);
      }
    } catch (error) {
      throw vaultFailure(error, `${this.label}/${entry.name}`, "store certificate");
    }
    entry.stored = { name, keyName: entry.name, tags };
    if (entry.loaded) entry.loaded = this.build(entry, entry.loaded.key, der);
    log.info(`${this.label}: stored the certificate of key '${entry.name}' in the secret '${name}'`);
    return entry.base + KIND_OFFSET.certificate;
  }

  /** The key whose public key the certificate holds: keys with the template's CKA_ID or CKA_LABEL first. */
  private async keyOfCertificate(spki: Buffer, identity: Partial<ObjectIdentity>): Promise<KeyEntry | undefined> {
    const likely = this.keys.filter((entry) => {
      const own = this.identity(entry, "private");
      return (identity.id && own.id?.equals(identity.id)) || (identity.label !== undefined && own.label === identity.label);
    });
    const rest = this.keys.filter((entry) => !likely.includes(entry));
    for (const group of [likely, rest]) {
      await this.loadAll(group, []);
      const found = group.find((entry) => entry.loaded?.material?.spkiDer.equals(spki));
      if (found) return found;
    }
    return undefined;
  }

  private async storeAuthority(der: Buffer, parsed: X509Certificate, spki: Buffer, identity: Partial<ObjectIdentity>): Promise<number> {
    const name = `p11-ca-${createHash("sha1").update(der).digest("hex")}`;
    const existing = this.authorities.find((authority) => authority.stored.name === name);
    if (existing) return existing.base + AUTHORITY_OFFSET;
    const tags = { [CERTIFICATE_AUTHORITY_TAG]: "1", [CERTIFICATE_LABEL_TAG]: identity.label ?? authorityLabel(parsed), [CERTIFICATE_ID_TAG]: (identity.id ?? keyIdentifier(spki)).toString("hex") };
    try {
      await this.backend.storeCertificate(this.slot.vaultUrl, name, der, tags);
    } catch (error) {
      throw vaultFailure(error, `${this.label}/${name}`, "store certificate");
    }
    const authority = this.addAuthority({ name, tags });
    log.info(`${this.label}: stored the CA certificate '${tags[CERTIFICATE_LABEL_TAG]}' in the secret '${name}'`);
    return authority.base + AUTHORITY_OFFSET;
  }

  async setIdentity(handle: number, change: Partial<ObjectIdentity>): Promise<void> {
    const { object } = await this.object(handle);
    if (object.kind !== "private" && object.kind !== "public" && object.kind !== "secret") {
      throw new Pkcs11Error(CKR.ACTION_PROHIBITED, `${this.label}: only key objects change their CKA_LABEL and CKA_ID here`);
    }
    const entry = this.byBase.get(VaultHandles.baseOf(handle))!;
    const loaded = entry.loaded!;
    let key: VaultKey;
    if (object.kind === "secret") {
      try {
        key = await this.backend.updateKeyTags(loaded.key, tagsWithIdentity(entry.tags, { private: change }));
      } catch (error) {
        throw vaultFailure(error, `${this.label}/${entry.name}`, "update");
      }
      entry.tags = { ...key.tags };
      entry.loaded = this.buildSecret(entry, key, loaded.secret!.length);
      return;
    }
    try {
      // The other side keeps what it shows now, even where it only followed this side's tags until now.
      const other = object.kind === "private" ? "public" : "private";
      const pinned = { label: this.identity(entry, other).label, ...(change.id !== undefined || entry.tags[idTag(other)] !== undefined || entry.tags[idTag(object.kind)] !== undefined ? { id: this.identity(entry, other).id ?? loaded.material!.id } : {}) };
      key = await this.backend.updateKeyTags(loaded.key, tagsWithIdentity(entry.tags, { [other]: pinned, [object.kind]: change }));
    } catch (error) {
      throw vaultFailure(error, `${this.label}/${entry.name}`, "update");
    }
    entry.loaded = this.build(entry, key, loaded.material!.certificate?.der);
  }

  async destroy(handle: number): Promise<void> {
    const { object } = await this.object(handle);
    const where = `${this.label}`;
    if (object.kind === "authority") {
      const authority = this.authorities.find((candidate) => candidate.base + AUTHORITY_OFFSET === handle)!;
      await this.deleteStored(authority.stored.name, where);
      this.authorities = this.authorities.filter((candidate) => candidate !== authority);
      return;
    }
    const entry = this.byBase.get(VaultHandles.baseOf(handle))!;
    if (object.kind === "public") {
      throw new Pkcs11Error(CKR.ACTION_PROHIBITED, `${where}: the public key of '${entry.name}' goes with its private key (CKA_DESTROYABLE is false): destroy the private key object`);
    }
    if (object.kind === "certificate") {
      if (!entry.stored) throw new Pkcs11Error(CKR.ACTION_PROHIBITED, `${where}: the certificate of '${entry.name}' is the vault's own certificate (CKA_DESTROYABLE is false): delete it in the vault`);
      await this.deleteStored(entry.stored.name, where);
      entry.stored = undefined;
      const loaded = entry.loaded!;
      // The vault's own certificate named like the key, if there is one, shows again once read.
      entry.loaded = this.build(entry, loaded.key, undefined);
      if (entry.vaultCertificate) entry.loaded = undefined;
      return;
    }
    try {
      await this.backend.deleteKey(this.slot.vaultUrl, entry.name);
    } catch (error) {
      throw vaultFailure(error, `${where}/${entry.name}`, "delete");
    }
    this.forget(entry, "deleted");
    log.info(`${where}: deleted key '${entry.name}' (soft delete: recoverable under the vault's retention policy)`);
    if (entry.stored) await this.deleteStored(entry.stored.name, where).catch(() => undefined);
  }

  private async deleteStored(name: string, where: string): Promise<void> {
    try {
      await this.backend.deleteStoredCertificate(this.slot.vaultUrl, name);
    } catch (error) {
      throw vaultFailure(error, `${where}/${name}`, "delete certificate");
    }
  }
}

function compareNames(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The secret holding a key's stored certificate (the contract in src/vault/types.ts StoredCertificate). */
export function storedCertificateName(keyName: string): string {
  const readable = `p11-cert-${keyName}`;
  return readable.length <= 127 ? readable : `p11-cert-${createHash("sha256").update(keyName.toLowerCase()).digest("hex").slice(0, 40)}`;
}
