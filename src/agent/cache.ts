// What an agent context keeps between applications: each key's public material, its certificate and the vault's
// key listing, so that a process after the first makes only the data-plane request it came for. An entry older than
// the refresh interval is still served, and read again in the background (a new version when none is pinned,
// enabled or disabled, changed key_ops). A failure that suggests the key changed drops its entries at once, so the
// next application reads it afresh.
import { isManagedHsmHost } from "../config/vaultUrl.ts";
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
      (value) => table.set(id, { value: Promise.resolve(value), fetchedAt: this.now(), refreshing: false }),
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

  async sign(key: VaultKey, algorithm: SignAlgorithm, digest: Buffer): Promise<Buffer> {
    try {
      return await this.inner.sign(key, algorithm, digest);
    } catch (error) {
      this.forgetOnChange(key, error);
      throw error;
    }
  }

  async decrypt(key: VaultKey, algorithm: DecryptAlgorithm, ciphertext: Buffer): Promise<Buffer> {
    try {
      return await this.inner.decrypt(key, algorithm, ciphertext);
    } catch (error) {
      this.forgetOnChange(key, error);
      throw error;
    }
  }

  getRandomBytes(vaultUrl: string, count: number): Promise<Buffer | undefined> {
    return this.inner.getRandomBytes(vaultUrl, count);
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

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Drops everything cached about the key, pinned version or not, and the listing of its vault. */
  private forgetOnChange(key: VaultKey, error: unknown): void {
    if (!suggestsChange(error)) return;
    const prefix = keyId(key.vaultUrl, key.name);
    for (const id of [...this.keys.keys()]) if (id === prefix || id.startsWith(`${prefix}/`)) this.keys.delete(id);
    this.certificates.delete(prefix);
    this.listings.delete(key.vaultUrl);
    log.debug(`${prefix}: dropped from the agent's cache after: ${(error as Error).message}`);
  }
}

function keyId(vaultUrl: string, name: string, version?: string): string {
  // Key Vault names are case-insensitive.
  return `${vaultUrl}/keys/${name.toLowerCase()}${version ? `/${version}` : ""}`;
}

const notImplemented = (what: string): Promise<never> => Promise.reject(new VaultError("other", `${what} is not implemented yet`));
