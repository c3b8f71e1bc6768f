// The configuration boundary: loadConfig reads config.json and the environment (src/token/discover.ts turns it into
// tokens).
export { loadConfig, findConfigFile, configHome, DEFAULT_TIMEOUT_MS, MAX_LABEL_BYTES } from "./load.ts";
export { normaliseVaultUrl, isLoopbackHost, isManagedHsmHost } from "./vaultUrl.ts";
export { ConfigError } from "./types.ts";
export type { ConfigFile, KeySlot, ModuleConfig, ResolvedSlot, SlotConfigEntry, VaultSlot } from "./types.ts";
