// What every token offers the session layer, whether it shows one configured key (key-token.ts) or every key of a
// vault (vault-token.ts). Sessions, operations and key management see only this.
import type { ResolvedSlot } from "../config/types.ts";
import type { Attribute } from "../protocol/codec.ts";
import type { Immediate } from "../session/immediate.ts";
import type { NewKeyProperties, NewKeySpec, ImportedKey } from "../vault/types.ts";
import type { KeyMaterial } from "./key-material.ts";
import type { ObjectIdentity, TokenObject } from "./objects.ts";
import type { SecretMaterial } from "./secret-key.ts";

export type LoginState = "public" | "user" | "so";

export interface FoundObject {
  object: TokenObject;
  /** The key behind a key object (and behind a key's certificate); absent for CA certificates. */
  material?: KeyMaterial;
  /** The key behind a secret key object (a Managed HSM AES key, or a session key). */
  secret?: SecretMaterial;
}

/** A key to make in the vault, already checked against the token's rules (src/session/key-management.ts). */
export interface KeyRequest {
  /** The name PKCS#11 asked for (a label that is a valid Key Vault name); otherwise the token picks one. */
  preferredName?: string;
  spec: NewKeySpec;
  properties: NewKeyProperties;
  identities: { private: Partial<ObjectIdentity>; public: Partial<ObjectIdentity> };
}

export interface CreatedKey {
  privateHandle: number;
  publicHandle: number;
}

export interface Token {
  readonly slotId: number;
  readonly slot: ResolvedSlot;
  readonly label: string;
  readonly serial: string;
  /** "Key Vault" or "Managed HSM" (CK_TOKEN_INFO.model). */
  readonly model: string;
  /** CK_SLOT_INFO.slotDescription. */
  readonly description: string;
  loginState: LoginState;
  /** Handles of the open sessions on this token. */
  readonly sessions: Set<number>;
  /** Why the token shows nothing, once known (a per-key slot whose key the vault does not have). */
  readonly problem: string | undefined;
  /** Starts reading from the vault in the background, so that the first use waits only for what is in flight. */
  prefetch(): void;
  /** The application is gone: no more background retries. */
  stop(): void;
  /** Handles of the objects matching a C_FindObjectsInit template, in a stable order. */
  find(template: readonly Attribute[]): Immediate<number[]>;
  /** The object behind a handle; CKR_OBJECT_HANDLE_INVALID when the token has none. */
  object(handle: number): Immediate<FoundObject>;
  /** Whose mechanisms C_GetMechanismList shows: the token's one key, every key kind, or none but key generation. */
  offeredKeys(): Immediate<KeyMaterial | SecretMaterial | "any" | "none">;
  /** C_GenerateKeyPair and C_CreateObject of a private key: makes the key in the vault. */
  createKey(request: KeyRequest, imported?: ImportedKey): Promise<CreatedKey>;
  /** C_GenerateKey with CKA_TOKEN true: an AES key in a Managed HSM (`request.spec` is oct-HSM). */
  createSecretKey(request: KeyRequest): Promise<number>;
  /** C_CreateObject of a certificate: stores it for the key whose public key it holds (or as a CA certificate). */
  storeCertificate(der: Buffer, identity: Partial<ObjectIdentity>): Promise<number>;
  /** C_SetAttributeValue of CKA_LABEL and CKA_ID on a key object. */
  setIdentity(handle: number, change: Partial<ObjectIdentity>): Promise<void>;
  /** C_DestroyObject. */
  destroy(handle: number): Promise<void>;
}

export function isManagedHsm(vaultUrl: string): boolean {
  try {
    return new URL(vaultUrl).hostname.toLowerCase().endsWith(".managedhsm.azure.net");
  } catch {
    return false;
  }
}
