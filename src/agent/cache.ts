// What an agent context keeps between applications: each key's public material, its certificate and the vault's
// key listing, so that a process after the first makes only the data-plane request it came for. An entry older than
// the refresh interval is still served, and read again in the background (a new version when none is pinned,
// enabled or disabled, changed key_ops). A failure that suggests the key changed drops its entries at once, so the
// next application reads it afresh.
import { log } from "../log/log.ts";
import type { AesAlgorithm, DecryptAlgorithm, ImportedKey, NewKeyProperties, NewKeySpec, SignAlgorithm, StoredCertificate, VaultBackend, VaultKey, VaultKeyListing, WrapAlgorithm } from "../vault/types.ts";
import { VaultError } from "../vault/types.ts";

export const DEFAULT_REFRESH_MS = 5 * 60_000;

interface Entry<T> {
  value: Promise<T>;
  fetchedAt: number;
  refreshing: boolean;
}

/** Failures after which the cached key may be what is wrong. */
function suggestsChange(error: unknown): boolean {
  return error instanceof VaultError && (error.kind === "not-found" || error.kind === "forbidden" || error.kind === "bad-parameter");
}

export class CachingVaultBackend implements VaultBackend {
  private readonly keys = new Map<string, Entry<VaultKey>>();
  private readonly certificates = new Map<string, Entry<Buffer | undefined>>();
  private readonly listings = new Map<string, Entry<string[]>>();
  private readonly keyListings = new Map<string, Entry<VaultKeyListing[]>>();
  private readonly certificateNames = new Map<string, Entry<string[]>>();
  private readonly storedListings = new Map<string, Entry<StoredCertificate[]>>();
  private readonly stored = new Map<string, Entry<Buffer>>();

  constructor(
    private readonly inner: VaultBackend,
    private readonly refreshMs = DEFAULT_REFRESH_MS,
    private readonly now: () => number = Date.now,
  ) {}

  private cached<T>(table: Map<string, Entry<T>>, id: string, fetch: () => Promise<T>): Promise<T> {
    const entry = table.get(id);
    if (entry) {
      if (!entry.refreshing && this.now() - entry.fetchedAt >= this.refreshMs) this.refresh(table, id, entry, fetch);
      return entry.value;
    }
    const value = fetch();
    const fresh: Entry<T> = { value, fetchedAt: this.now(), refreshing: false };
    table.set(id, fresh);
    // A failed fetch is not kept: the next application asks the vault again.
    value.catch(() => {
      if (table.get(id) === fresh) table.delete(id);
    });
    return value;
  }

  private refresh<T>(table: Map<string, Entry<T>>, id: string, entry: Entry<T>, fetch: () => Promise<T>): void {
    entry.refreshing = true;
    fetch().then(
      (value) => {
        // A write that dropped the entry meanwhile wins: this read may have been answered before the write.
        if (table.get(id) === entry) table.set(id, { value: Promise.resolve(value), fetchedAt: this.now(), refreshing: false });
      },
      (error: unknown) => {
        entry.refreshing = false;
        if (suggestsChange(error)) {
          table.delete(id);
          log.debug(`${id}: dropped from the agent's cache: ${(error as Error).message}`);
        }
      },
    );
  }

  getKey(vaultUrl: string, name: string, version?: string): Promise<VaultKey> {
    return this.cached(this.keys, keyId(vaultUrl, name, version), () => this.inner.getKey(vaultUrl, name, version));
  }

  listKeyNames(vaultUrl: string): Promise<string[]> {
    return this.cached(this.listings, vaultUrl, () => this.inner.listKeyNames(vaultUrl));
  }

  getCertificate(vaultUrl: string, name: string): Promise<Buffer | undefined> {
    return this.cached(this.certificates, keyId(vaultUrl, name), () => this.inner.getCertificate(vaultUrl, name));
  }

  sign(key: VaultKey, algorithm: SignAlgorithm, digest: Buffer): Promise<Buffer> {
    return this.using(key, () => this.inner.sign(key, algorithm, digest));
  }

  decrypt(key: VaultKey, algorithm: DecryptAlgorithm, ciphertext: Buffer): Promise<Buffer> {
    return this.using(key, () => this.inner.decrypt(key, algorithm, ciphertext));
  }

  getRandomBytes(vaultUrl: string, count: number): Promise<Buffer | undefined> {
    return this.inner.getRandomBytes(vaultUrl, count);
  }

  serviceKind(vaultUrl: string): Promise<"key-vault" | "managed-hsm"> {
    // The backend learns it once per vault and keeps it.
    return this.inner.serviceKind(vaultUrl);
  }

  listKeys(vaultUrl: string): Promise<VaultKeyListing[]> {
    return this.cached(this.keyListings, vaultUrl, () => this.inner.listKeys(vaultUrl));
  }

  listCertificateNames(vaultUrl: string): Promise<string[]> {
    return this.cached(this.certificateNames, vaultUrl, () => this.inner.listCertificateNames(vaultUrl));
  }

  createKey(vaultUrl: string, name: string, spec: NewKeySpec, properties: NewKeyProperties): Promise<VaultKey> {
    return this.writing(() => this.inner.createKey(vaultUrl, name, spec, properties), () => this.forgetKey(vaultUrl, name));
  }

  importKey(vaultUrl: string, name: string, key: ImportedKey, properties: NewKeyProperties): Promise<VaultKey> {
    return this.writing(() => this.inner.importKey(vaultUrl, name, key, properties), () => this.forgetKey(vaultUrl, name));
  }

  updateKeyTags(key: VaultKey, tags: Record<string, string>): Promise<VaultKey> {
    return this.writing(() => this.inner.updateKeyTags(key, tags), () => this.forgetKey(key.vaultUrl, key.name));
  }

  deleteKey(vaultUrl: string, name: string): Promise<void> {
    return this.writing(() => this.inner.deleteKey(vaultUrl, name), () => this.forgetKey(vaultUrl, name));
  }

  listStoredCertificates(vaultUrl: string): Promise<StoredCertificate[]> {
    return this.cached(this.storedListings, vaultUrl, () => this.inner.listStoredCertificates(vaultUrl));
  }

  getStoredCertificate(vaultUrl: string, name: string): Promise<Buffer> {
    return this.cached(this.stored, storedId(vaultUrl, name), () => this.inner.getStoredCertificate(vaultUrl, name));
  }

  storeCertificate(vaultUrl: string, name: string, der: Buffer, tags: Record<string, string>): Promise<void> {
    return this.writing(() => this.inner.storeCertificate(vaultUrl, name, der, tags), () => this.forgetStored(vaultUrl, name));
  }

  deleteStoredCertificate(vaultUrl: string, name: string): Promise<void> {
    return this.writing(() => this.inner.deleteStoredCertificate(vaultUrl, name), () => this.forgetStored(vaultUrl, name));
  }

  encryptAes(key: VaultKey, algorithm: AesAlgorithm, plaintext: Buffer, options: { iv?: Buffer; aad?: Buffer }): Promise<{ ciphertext: Buffer; iv?: Buffer; tag?: Buffer }> {
    return this.using(key, () => this.inner.encryptAes(key, algorithm, plaintext, options));
  }

  decryptAes(key: VaultKey, algorithm: AesAlgorithm, ciphertext: Buffer, options: { iv: Buffer; aad?: Buffer; tag?: Buffer }): Promise<Buffer> {
    return this.using(key, () => this.inner.decryptAes(key, algorithm, ciphertext, options));
  }

  wrapKey(key: VaultKey, algorithm: WrapAlgorithm, keyBytes: Buffer): Promise<Buffer> {
    return this.using(key, () => this.inner.wrapKey(key, algorithm, keyBytes));
  }

  unwrapKey(key: VaultKey, algorithm: WrapAlgorithm, wrapped: Buffer): Promise<Buffer> {
    return this.using(key, () => this.inner.unwrapKey(key, algorithm, wrapped));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** A data-plane operation: a failure that suggests the key changed drops what is cached about it. */
  private async using<T>(key: VaultKey, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (suggestsChange(error)) {
        this.forgetKey(key.vaultUrl, key.name);
        log.debug(`${keyId(key.vaultUrl, key.name)}: dropped from the agent's cache after: ${(error as Error).message}`);
      }
      throw error;
    }
  }

  /**
   * A write: whatever it did (a failure or a timeout may still have changed the vault), what it may have made
   * stale is dropped as soon as it settles, including entries read while it was in flight.
   */
  private async writing<T>(run: () => Promise<T>, forget: () => void): Promise<T> {
    try {
      return await run();
    } finally {
      forget();
    }
  }

  /** Drops everything cached about the key, pinned version or not, and the key listings of its vault. */
  private forgetKey(vaultUrl: string, name: string): void {
    const prefix = keyId(vaultUrl, name);
    for (const id of [...this.keys.keys()]) if (id === prefix || id.startsWith(`${prefix}/`)) this.keys.delete(id);
    this.certificates.delete(prefix);
    this.listings.delete(vaultUrl);
    this.keyListings.delete(vaultUrl);
  }

  private forgetStored(vaultUrl: string, name: string): void {
    this.stored.delete(storedId(vaultUrl, name));
    this.storedListings.delete(vaultUrl);
  }
}

function storedId(vaultUrl: string, name: string): string {
  // Secret names are case-insensitive too.
  return `${vaultUrl}/secrets/${name.toLowerCase()}`;
}

function keyId(vaultUrl: string, name: string, version?: string): string {
  // Key Vault names are case-insensitive.
  return `${vaultUrl}/keys/${name.toLowerCase()}${version ? `/${version}` : ""}`;
}

