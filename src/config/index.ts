// The configuration boundary: loadConfig reads config.json and the environment, discoverSlots lists the tokens.
export { loadConfig, findConfigFile, configHome, DEFAULT_TIMEOUT_MS, MAX_LABEL_BYTES } from "./load.ts";
export { discoverSlots } from "./discover.ts";
export { normaliseVaultUrl, isLoopbackHost, isManagedHsmHost } from "./vaultUrl.ts";
export { ConfigError } from "./types.ts";
export type { ConfigFile, ModuleConfig, ResolvedSlot, SlotConfigEntry } from "./types.ts";
