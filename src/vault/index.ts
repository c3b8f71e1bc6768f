// The vault boundary: createVaultBackend builds the Azure SDK backend the PKCS#11 core talks to.
import type { ModuleConfig } from "../config/types.ts";
import { AzureVaultBackend, type VaultBackendOptions } from "./backend.ts";
import type { VaultBackend } from "./types.ts";

export { AzureVaultBackend, type VaultBackendOptions } from "./backend.ts";
export { toVaultError } from "./errors.ts";
export { AgentPool, buildCaList } from "./trust.ts";
export * from "./types.ts";

export function createVaultBackend(config: ModuleConfig, options?: VaultBackendOptions): VaultBackend {
  return new AzureVaultBackend(config, options);
}
