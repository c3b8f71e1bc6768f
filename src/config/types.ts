// The module's configuration, as the helper core consumes it. `src/config/` turns config.json (the C++ module's
// format plus our optional fields) and the environment into these values.

/** One slot as written in config.json. Field names are the C++ module's, so existing files keep working. */
export interface SlotConfigEntry {
  /** Absent: the slot is a vault token (every key of vault_url). */
  key_name?: string;
  label?: string;
  vault_url?: string;
  /** Pin one key version instead of following the latest. */
  key_version?: string;
  /** Base64 DER X.509 certificate to expose on the token. */
  certificate?: string;
  /**
   * PEM or DER certificate file; relative paths are taken from the config file's folder. A PEM file may hold the
   * chain: the key's certificate first, then the CA certificates, which the token shows as authority certificates.
   */
  certificate_path?: string;
  /** Extra CA bundle (PEM) to trust when talking to this slot's vault. */
  ca_file?: string;
  /** Vault tokens: whether generated keys are HSM-protected on a Key Vault vault (default false). */
  hsm?: boolean;
}

export interface ConfigFile {
  slots?: SlotConfigEntry[];
  /** Extra CA bundle (PEM) trusted for every vault. */
  ca_file?: string;
  /** Read by the shim too (native/agent_config.c): whether to use the agent, and where it listens. */
  agent?: boolean;
  agent_socket?: string;
}

/** CA certificates a token can show after the key's own (object handles leave room for this many per slot). */
export const MAX_AUTHORITY_CERTIFICATES = 13;

interface SlotCommon {
  /** Token label: the configured label, or a default (see KeySlot and VaultSlot). */
  label: string;
  /** Normalised vault URL without a trailing slash, e.g. https://my-vault.vault.azure.net */
  vaultUrl: string;
  /** Absolute path of the slot's own `ca_file`, trusted (with ModuleConfig.caFiles) for this slot's vault. */
  caFile?: string;
}

/** A per-key slot: one key, named by key_name (label default: its first 32 characters). */
export interface KeySlot extends SlotCommon {
  kind: "key";
  keyName: string;
  keyVersion?: string;
  /** Certificate DER from `certificate` or `certificate_path`; when absent the core asks the vault. */
  certificateDer?: Buffer;
  /** The CA certificates after the key's own in a PEM `certificate_path`, in file order. */
  certificateChainDer?: Buffer[];
  /** True when the certificate came from config, so the vault is not asked for one. */
  certificateFromConfig: boolean;
}

/** A vault token: every key of the vault (label default: the vault's name). */
export interface VaultSlot extends SlotCommon {
  kind: "vault";
  /** Whether C_GenerateKeyPair asks a Key Vault vault for -HSM keys (Managed HSM keys always are). */
  hsm: boolean;
}

/** A slot after validation and defaulting: everything the core needs to build a token. */
export type ResolvedSlot = KeySlot | VaultSlot;

export interface ModuleConfig {
  /** The config file that was read, or null when none was found. */
  source: string | null;
  /** Configured slots, in file order. Empty means "every key in defaultVaultUrl". */
  slots: ResolvedSlot[];
  /** AZURE_KEYVAULT_URL, normalised; used for slots without vault_url and for key discovery. */
  defaultVaultUrl?: string;
  /** PEM bundles to trust in addition to the system store and NODE_EXTRA_CA_CERTS. */
  caFiles: string[];
  /** Per remote operation deadline in ms (AZURE_KEYVAULT_PKCS11_TIMEOUT_MS, default 60000). */
  timeoutMs: number;
  /** `"agent"`: whether processes with this config share an agent (AZURE_KEYVAULT_PKCS11_AGENT decides first). */
  agent?: boolean;
}

/** Thrown for a bad config: C_Initialize fails with CKR_GENERAL_ERROR and logs `${file}: ${field}: ${message}`. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly field: string,
    readonly detail: string,
  ) {
    super(`${file}: ${field}: ${detail}`);
    this.name = "ConfigError";
  }
}
