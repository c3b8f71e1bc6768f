// Which processes may share an agent context: those for which everything that decides what a private helper would
// do is the same. That is the environment the shim sends in its hello (the variables named here, the same list as
// native/agent.c), and the content of every file those variables and the config point at.
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { authFileCandidates } from "../auth/authFile.ts";
import { findConfigFile } from "../config/load.ts";

/** Prefixes of the variables a host's shim sends: credentials (SDK, managed identity) and the module's own. */
export const CONTEXT_VARIABLE_PREFIXES = ["AZURE_", "IDENTITY_", "MSI_", "IMDS_"] as const;
/** Single variables it sends: trust, proxies, and where the config, azureauth.json and the Azure CLI are found. */
export const CONTEXT_VARIABLES = [
  "NODE_EXTRA_CA_CERTS",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "ALL_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "all_proxy",
  "HOME",
  "XDG_CONFIG_HOME",
  "PATH",
] as const;

/** Variables that name files; a relative one means the host's working folder, not the agent's. */
const PATH_VARIABLES = ["AZURE_KEYVAULT_PKCS11_CONFIG", "AZURE_AUTH_LOCATION", "NODE_EXTRA_CA_CERTS", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH"];

export function isContextVariable(name: string): boolean {
  return CONTEXT_VARIABLE_PREFIXES.some((prefix) => name.startsWith(prefix)) || (CONTEXT_VARIABLES as readonly string[]).includes(name);
}

export interface ContextIdentity {
  /** Hex SHA-256 over the environment and the files' contents. */
  key: string;
  /** The environment the context runs with: the hello's variables, file paths made absolute. */
  env: Record<string, string>;
  /** The config file that was found, for logs. */
  configFile: string | null;
}

function fileDigest(file: string): string {
  try {
    return createHash("sha256").update(readFileSync(file)).digest("hex");
  } catch (error) {
    return `unreadable:${(error as NodeJS.ErrnoException).code ?? "?"}`;
  }
}

/** ca_file at the top level and in each slot, resolved like src/config/load.ts does (relative to the config). */
function configCaFiles(configFile: string): string[] {
  try {
    const parsed = JSON.parse(readFileSync(configFile, "utf8")) as { ca_file?: unknown; slots?: Array<{ ca_file?: unknown }> };
    const folder = path.dirname(configFile);
    const named = [parsed.ca_file, ...(Array.isArray(parsed.slots) ? parsed.slots.map((slot) => slot?.ca_file) : [])];
    return named.filter((file): file is string => typeof file === "string").map((file) => path.resolve(folder, file));
  } catch {
    // A broken config is still a context of its own (keyed by its content); C_Initialize reports it.
    return [];
  }
}

/** The environment a hello names, with file paths made absolute against the host's working folder. */
function contextEnvironment(variables: Record<string, string>, cwd: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(variables)) if (isContextVariable(name)) env[name] = value;
  for (const name of PATH_VARIABLES) {
    const value = env[name];
    if (value && !path.isAbsolute(value)) env[name] = path.resolve(cwd, value);
  }
  return env;
}

/** The files whose content decides the context, as the module would find them with this environment. */
function contextFiles(env: Record<string, string>): { configFile: string | null; files: string[] } {
  let configFile: string | null;
  try {
    configFile = findConfigFile(env);
  } catch {
    // AZURE_KEYVAULT_PKCS11_CONFIG names a missing file: that error is the context's, reported at C_Initialize.
    configFile = env.AZURE_KEYVAULT_PKCS11_CONFIG ?? null;
  }
  const files = [
    ...(configFile ? [configFile, ...configCaFiles(configFile)] : []),
    ...authFileCandidates(env),
    ...(env.NODE_EXTRA_CA_CERTS ? [env.NODE_EXTRA_CA_CERTS] : []),
  ];
  return { configFile, files };
}

export function contextIdentity(variables: Record<string, string>, cwd: string): ContextIdentity {
  const env = contextEnvironment(variables, cwd);
  return identityOf(env, contextFiles(env));
}

function identityOf(env: Record<string, string>, { configFile, files }: { configFile: string | null; files: string[] }): ContextIdentity {
  const hash = createHash("sha256");
  for (const name of Object.keys(env).sort()) hash.update(`${name}=${env[name]}\0`);
  for (const file of files) hash.update(`${file}:${fileDigest(file)}\0`);
  return { key: hash.digest("hex"), env, configFile };
}

/** What a file's stat says about its content, without reading it: changed content changes this too. */
function fileStamp(file: string): string {
  try {
    const stats = statSync(file, { bigint: true });
    return `${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
  } catch {
    return "missing";
  }
}

/**
 * contextIdentity for every hello, without reading and hashing the files again while their stat stays the same:
 * a hello is on every process's path to its first signature.
 */
export class ContextIdentities {
  private readonly known = new Map<string, { identity: ContextIdentity; stamps: Array<[string, string]> }>();

  identify(variables: Record<string, string>, cwd: string): ContextIdentity {
    const env = contextEnvironment(variables, cwd);
    const request = createHash("sha256");
    for (const name of Object.keys(env).sort()) request.update(`${name}=${env[name]}\0`);
    const id = request.digest("hex");
    const remembered = this.known.get(id);
    if (remembered && remembered.stamps.every(([file, stamp]) => fileStamp(file) === stamp)) return remembered.identity;
    const found = contextFiles(env);
    // Stamped before they are read: a file that changes in between is read again next time.
    const stamps = found.files.map((file): [string, string] => [file, fileStamp(file)]);
    const identity = identityOf(env, found);
    if (this.known.size >= 1000) this.known.clear();
    this.known.set(id, { identity, stamps });
    return identity;
  }
}
