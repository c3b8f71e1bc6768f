// Turns the config into the slot list: the configured slots, or, with none configured, one slot per key in
// AZURE_KEYVAULT_URL, sorted by name so that slot ids stay stable between runs. It sits with the tokens, not in
// src/config/, because it asks the vault: the config stays a leaf that reads files and the environment.
import type { ModuleConfig, ResolvedSlot } from "../config/types.ts";
import { log } from "../log/log.ts";
import type { VaultBackend } from "../vault/types.ts";

export async function discoverSlots(config: ModuleConfig, backend: VaultBackend): Promise<ResolvedSlot[]> {
  if (config.slots.length > 0) return config.slots;
  if (config.defaultVaultUrl === undefined) {
    log.debug("no slots configured and AZURE_KEYVAULT_URL is not set: the module has no tokens");
    return [];
  }
  const vaultUrl = config.defaultVaultUrl;
  const names = [...(await backend.listKeyNames(vaultUrl))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const slots = names.map((name): ResolvedSlot => ({ kind: "key", label: name.slice(0, 32), keyName: name, vaultUrl, certificateFromConfig: false }));
  const byLabel = new Map<string, string>();
  for (const slot of slots) {
    if (slot.kind !== "key") continue;
    const other = byLabel.get(slot.label);
    if (other !== undefined) {
      log.warn(`keys '${other}' and '${slot.keyName}' in ${vaultUrl} share the token label '${slot.label}' (first 32 characters); write a config with distinct labels to tell them apart`);
    } else {
      byLabel.set(slot.label, slot.keyName);
    }
  }
  log.debug(`Configured slots (every key in ${vaultUrl}):${names.map((name) => `\n  ${name}`).join("")}`);
  return slots;
}
