// Which config file the module reads (and why), and whether it loads: src/config/load.ts does both, with its own
// search order and the schema validator; this only explains its answer.
import path from "node:path";
import { ENVIRONMENT, configHome, findConfigFile, loadConfig } from "../config/load.ts";
import { ConfigError, type ModuleConfig } from "../config/types.ts";
import type { Report } from "./report.ts";

/** The paths findConfigFile tries, in its order: the variable, when set, is the only one. */
function defaultPaths(env: NodeJS.ProcessEnv): string[] {
  return [path.join(configHome(env), "azure-keyvault-pkcs11", "config.json"), "/etc/azure-keyvault-pkcs11/config.json"];
}

function searchOrder(env: NodeJS.ProcessEnv): string[] {
  const explicit = env.AZURE_KEYVAULT_PKCS11_CONFIG;
  if (explicit) return [`${path.resolve(explicit)} (AZURE_KEYVAULT_PKCS11_CONFIG)`];
  return defaultPaths(env);
}

function configFix(error: ConfigError): string {
  if (error.file === ENVIRONMENT) return `correct the environment variable ${error.field} (${error.detail.replace(/^'.*?' /, "it ")})`;
  if (error.field === "AZURE_KEYVAULT_PKCS11_CONFIG") return "point AZURE_KEYVAULT_PKCS11_CONFIG at an existing config.json, or unset it to use the default paths";
  if (error.field === "(file)") return `make ${error.file} a readable JSON file (or remove it to fall back to the next path)`;
  if (/^line \d+/.test(error.field)) return `fix the JSON syntax of ${error.file} at ${error.field}`;
  return `edit ${error.field} in ${error.file}: it ${error.detail} (config/config.schema.json and docs/configuration.md describe every field)`;
}

export function checkConfig(env: NodeJS.ProcessEnv, report: Report): ModuleConfig | undefined {
  const order = searchOrder(env);
  let source: string | null;
  try {
    source = findConfigFile(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    report.fail("config file", `${error.message} (search order: ${order.join(", ")})`, configFix(error));
    return undefined;
  }
  if (source === null) {
    report.ok("config file", `none found (searched ${order.join(", ")}): slots come from AZURE_KEYVAULT_URL`);
  } else {
    const why = env.AZURE_KEYVAULT_PKCS11_CONFIG
      ? `named by AZURE_KEYVAULT_PKCS11_CONFIG, which replaces the search of ${defaultPaths(env).join(", ")}`
      : `the first that exists of ${order.join(", ")}`;
    report.ok("config file", `${source} (${why})`);
  }
  let config: ModuleConfig;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    report.fail("config", error.message, configFix(error));
    return undefined;
  }
  if (config.slots.length > 0) {
    report.ok("config", `valid: ${config.slots.length} slot(s): ${config.slots.map((slot) => `${slot.label} = ${slot.kind === "key" ? `${slot.vaultUrl}/keys/${slot.keyName}` : `every key of ${slot.vaultUrl}`}`).join(", ")}; timeout ${config.timeoutMs} ms`);
  } else if (config.defaultVaultUrl !== undefined) {
    report.ok("config", `valid: no slots configured, one token per key in ${config.defaultVaultUrl} (AZURE_KEYVAULT_URL)`);
  } else {
    report.fail(
      "config",
      `${config.source ? `${config.source} lists no slots` : "no config file"} and AZURE_KEYVAULT_URL is not set: the module has no tokens`,
      "add slots to config.json (docs/configuration.md), or set AZURE_KEYVAULT_URL to show every key of one vault",
    );
  }
  return config;
}
