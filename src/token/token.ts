// One slot and its token: the configured key, its objects once loaded, and the login state its sessions share.
import { createHash } from "node:crypto";
import type { ResolvedSlot } from "../config/types.ts";
import type { VaultBackend } from "../vault/types.ts";
import { log } from "../log/log.ts";
import { buildKeyMaterial, type KeyMaterial } from "./key-material.ts";
import { buildObjects, type TokenObject } from "./objects.ts";
import { vaultFailure } from "./vault-errors.ts";

export type LoginState = "public" | "user" | "so";

export interface LoadedToken {
  material: KeyMaterial;
  objects: TokenObject[];
}

export class Token {
  loginState: LoginState = "public";
  /** Handles of the open sessions on this token. */
  readonly sessions = new Set<number>();
  readonly serial: string;
  readonly model: string;
  private loading: Promise<LoadedToken> | undefined;
  private loaded: LoadedToken | undefined;

  constructor(
    readonly slotId: number,
    readonly slot: ResolvedSlot,
    private readonly backend: VaultBackend,
    private readonly ulongSize: number,
  ) {
    // Stable across restarts and machines, distinct per vault and key.
    this.serial = createHash("sha256").update(`${slot.vaultUrl}/keys/${slot.keyName}`).digest("hex").slice(0, 16);
    this.model = isManagedHsm(slot.vaultUrl) ? "Managed HSM" : "Key Vault";
  }

  get label(): string {
    return this.slot.label;
  }

  /** The loaded key, if it already is: the fast path of every signature. */
  get current(): LoadedToken | undefined {
    return this.loaded;
  }

  /** Starts loading in the background; failures are logged by load() and retried on the next use. */
  prefetch(): void {
    this.load().catch(() => undefined);
  }

  /** The key and objects, fetched once; a failed fetch is forgotten so that the next call tries again. */
  load(): Promise<LoadedToken> {
    if (this.loaded) return Promise.resolve(this.loaded);
    if (!this.loading) {
      this.loading = this.fetch().then(
        (loaded) => {
          this.loaded = loaded;
          return loaded;
        },
        (error: unknown) => {
          this.loading = undefined;
          throw vaultFailure(error, this.label, "load");
        },
      );
    }
    return this.loading;
  }

  private async fetch(): Promise<LoadedToken> {
    const { slot } = this;
    const started = Date.now();
    const [key, certificateDer] = await Promise.all([
      this.backend.getKey(slot.vaultUrl, slot.keyName, slot.keyVersion),
      slot.certificateDer || slot.certificateFromConfig ? Promise.resolve(slot.certificateDer) : this.vaultCertificate(),
    ]);
    const material = buildKeyMaterial(key, certificateDer, this.label);
    log.debug(`${this.label}: loaded ${material.kind} key ${key.kid} (${material.keyBits} bits)${material.certificate ? " with certificate" : ""} in ${Date.now() - started} ms`);
    return { material, objects: buildObjects(this.slotId, material, key.name, this.ulongSize, slot.certificateChainDer) };
  }

  private async vaultCertificate(): Promise<Buffer | undefined> {
    try {
      return await this.backend.getCertificate(this.slot.vaultUrl, this.slot.keyName);
    } catch (error) {
      // A key without its certificate still signs; say why the certificate object is missing.
      log.warn(`${this.label}: cannot read certificate '${this.slot.keyName}' from the vault (${error instanceof Error ? error.message : String(error)}); the token shows no certificate`);
      return undefined;
    }
  }
}

export function isManagedHsm(vaultUrl: string): boolean {
  try {
    return new URL(vaultUrl).hostname.toLowerCase().endsWith(".managedhsm.azure.net");
  } catch {
    return false;
  }
}
