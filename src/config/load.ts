// Reads config.json (the C++ module's format plus key_version and ca_file) and the environment into a
// ModuleConfig. Everything that can be checked without the network is checked here, so that a bad config fails
// C_Initialize with one line naming the file and the field instead of failing later, at the first signature.
import { X509Certificate } from "node:crypto";
import { readFileSync, statSync, type Stats } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { log } from "../log/log.ts";
import { locateJsonError } from "./jsonError.ts";
import { validateConfigShape } from "./schema.ts";
import { ConfigError, MAX_AUTHORITY_CERTIFICATES, type ConfigFile, type KeySlot, type ModuleConfig, type ResolvedSlot, type SlotConfigEntry } from "./types.ts";
import { normaliseVaultUrl } from "./vaultUrl.ts";

/** `file` of a ConfigError raised by an environment variable rather than by config.json. */
export const ENVIRONMENT = "environment";
export const DEFAULT_TIMEOUT_MS = 60_000;
const MIN_TIMEOUT_MS = 100;
const MAX_TIMEOUT_MS = 3_600_000;
/** CK_TOKEN_INFO.label is 32 bytes of blank-padded UTF-8. */
export const MAX_LABEL_BYTES = 32;
const DEFAULT_LABEL_CHARS = 32;

const KNOWN_TOP_LEVEL = new Set(["slots", "ca_file", "agent", "agent_socket"]);
const KNOWN_SLOT_FIELDS = new Set(["key_name", "label", "vault_url", "key_version", "certificate", "certificate_path", "ca_file", "hsm"]);

export function loadConfig(env: NodeJS.ProcessEnv = process.env): ModuleConfig {
  const timeoutMs = readTimeout(env);
  const defaultVaultUrl = readDefaultVaultUrl(env);
  const source = findConfigFile(env);
  if (source === null) {
    log.debug("no config file found; slots come from AZURE_KEYVAULT_URL");
    return { source: null, slots: [], defaultVaultUrl, caFiles: [], timeoutMs };
  }
  const file = parseConfigFile(source);
  const folder = path.dirname(source);
  const caFiles = file.ca_file === undefined ? [] : [readCaFile(source, "ca_file", path.resolve(folder, file.ca_file))];
  const slots = (file.slots ?? []).map((entry, index) => resolveSlot(source, folder, entry, index, defaultVaultUrl));
  checkDuplicateLabels(source, slots, file.slots ?? []);
  log.debug(`loaded ${source}: ${slots.length} slot(s)${slots.map((slot) => `\n  ${slot.label}: ${slot.kind === "key" ? `${slot.vaultUrl}/keys/${slot.keyName}` : `every key of ${slot.vaultUrl}`}`).join("")}`);
  return { source, slots, defaultVaultUrl, caFiles, timeoutMs, ...(file.agent === undefined ? {} : { agent: file.agent }) };
}

function readTimeout(env: NodeJS.ProcessEnv): number {
  const raw = env.AZURE_KEYVAULT_PKCS11_TIMEOUT_MS;
  if (raw === undefined || raw.trim() === "") return DEFAULT_TIMEOUT_MS;
  const value = Number(raw.trim());
  if (!/^\d+$/.test(raw.trim()) || value < MIN_TIMEOUT_MS || value > MAX_TIMEOUT_MS) {
    throw new ConfigError(
      ENVIRONMENT,
      "AZURE_KEYVAULT_PKCS11_TIMEOUT_MS",
      `'${raw}' must be a whole number of milliseconds between ${MIN_TIMEOUT_MS} and ${MAX_TIMEOUT_MS}`,
    );
  }
  return value;
}

function readDefaultVaultUrl(env: NodeJS.ProcessEnv): string | undefined {
  const raw = env.AZURE_KEYVAULT_URL;
  if (raw === undefined || raw.trim() === "") return undefined;
  const result = normaliseVaultUrl(raw);
  if (!result.ok) throw new ConfigError(ENVIRONMENT, "AZURE_KEYVAULT_URL", result.reason);
  return result.url;
}

/** The config path: AZURE_KEYVAULT_PKCS11_CONFIG, else the XDG path, else /etc; null when none exists. */
export function findConfigFile(env: NodeJS.ProcessEnv): string | null {
  const explicit = env.AZURE_KEYVAULT_PKCS11_CONFIG;
  if (explicit !== undefined && explicit !== "") {
    const resolved = path.resolve(explicit);
    log.debug(`Attempting to load config from path: ${resolved} (AZURE_KEYVAULT_PKCS11_CONFIG)`);
    if (!isFile(resolved)) {
      throw new ConfigError(resolved, "AZURE_KEYVAULT_PKCS11_CONFIG", "no such file (the variable names a config file that does not exist)");
    }
    return resolved;
  }
  for (const candidate of [path.join(configHome(env), "azure-keyvault-pkcs11", "config.json"), "/etc/azure-keyvault-pkcs11/config.json"]) {
    log.debug(`Attempting to load config from path: ${candidate}`);
    if (isFile(candidate)) return candidate;
    log.debug(`Skipping ${candidate}: not found`);
  }
  return null;
}

/** $XDG_CONFIG_HOME, or ~/.config; the XDG spec says to ignore a relative XDG_CONFIG_HOME. */
export function configHome(env: NodeJS.ProcessEnv): string {
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && path.isAbsolute(xdg)) return xdg;
  return path.join(env.HOME || homedir(), ".config");
}

function isFile(candidate: string): boolean {
  let stats: Stats;
  try {
    stats = statSync(candidate);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return false;
    throw new ConfigError(candidate, "(file)", `cannot read: ${describeFsError(error)}`);
  }
  // Something is there but is not a config file: say so rather than fall through to another file silently.
  if (!stats.isFile()) throw new ConfigError(candidate, "(file)", "cannot read: not a regular file");
  return true;
}

function parseConfigFile(source: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(source, "utf8");
  } catch (error) {
    throw new ConfigError(source, "(file)", `cannot read: ${describeFsError(error)}`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    if (text.trim() === "") throw new ConfigError(source, "(file)", "invalid JSON: the file is empty");
    const where = locateJsonError(text);
    // V8 quotes the whole document in some messages; keep only the diagnosis.
    const detail = (error as Error).message.split("\n")[0]!.replace(/, ".*$/, "").replace(/ in JSON at position \d+.*$/, "");
    throw new ConfigError(source, where ? `line ${where.line}, column ${where.column}` : "(file)", `invalid JSON: ${detail}`);
  }
  const problem = validateConfigShape(document);
  if (problem) throw new ConfigError(source, problem.field, problem.message);
  const config = document as ConfigFile;
  reportUnknownFields(source, document as Record<string, unknown>);
  return config;
}

function reportUnknownFields(source: string, document: Record<string, unknown>): void {
  // The C++ module ignored fields it did not know; keep accepting them so shared files keep working.
  for (const key of Object.keys(document)) {
    if (!KNOWN_TOP_LEVEL.has(key)) log.debug(`${source}: ignoring unknown field '${key}'`);
  }
  const slots = Array.isArray(document.slots) ? (document.slots as Record<string, unknown>[]) : [];
  slots.forEach((slot, index) => {
    for (const key of Object.keys(slot)) {
      if (!KNOWN_SLOT_FIELDS.has(key)) log.debug(`${source}: ignoring unknown field 'slots[${index}].${key}'`);
    }
  });
}

function resolveSlot(source: string, folder: string, entry: SlotConfigEntry, index: number, defaultVaultUrl: string | undefined): ResolvedSlot {
  const field = (name: string): string => `slots[${index}].${name}`;
  let vaultUrl: string;
  if (entry.vault_url !== undefined) {
    const result = normaliseVaultUrl(entry.vault_url);
    if (!result.ok) throw new ConfigError(source, field("vault_url"), result.reason);
    vaultUrl = result.url;
  } else if (defaultVaultUrl !== undefined) {
    vaultUrl = defaultVaultUrl;
  } else {
    throw new ConfigError(source, field("vault_url"), "missing: set vault_url on the slot or the AZURE_KEYVAULT_URL environment variable");
  }
  const label = checkedLabel(source, field("label"), entry.label ?? (entry.key_name ?? vaultName(vaultUrl)).slice(0, DEFAULT_LABEL_CHARS));
  const caFile = entry.ca_file === undefined ? undefined : readCaFile(source, field("ca_file"), path.resolve(folder, entry.ca_file));
  if (entry.key_name === undefined) {
    // A vault token: its keys come from the vault, so the per-key fields have nothing to apply to.
    for (const name of ["key_version", "certificate", "certificate_path"] as const) {
      if (entry[name] !== undefined) throw new ConfigError(source, field(name), "applies to one key: set key_name too, or remove it from this vault token");
    }
    return { kind: "vault", label, vaultUrl, hsm: entry.hsm ?? false, ...(caFile ? { caFile } : {}) };
  }
  if (entry.hsm !== undefined) throw new ConfigError(source, field("hsm"), "applies to vault tokens (slots without key_name), whose C_GenerateKeyPair makes keys");
  const slot: KeySlot = { kind: "key", label, keyName: entry.key_name, vaultUrl, certificateFromConfig: false };
  if (entry.key_version !== undefined) slot.keyVersion = entry.key_version;
  if (entry.certificate !== undefined) {
    slot.certificateDer = parseBase64Certificate(source, field("certificate"), entry.certificate);
    slot.certificateFromConfig = true;
  } else if (entry.certificate_path !== undefined) {
    const [certificate, ...chain] = readCertificateFile(source, field("certificate_path"), path.resolve(folder, entry.certificate_path));
    slot.certificateDer = certificate;
    if (chain.length > 0) slot.certificateChainDer = chain;
    slot.certificateFromConfig = true;
  }
  if (caFile) slot.caFile = caFile;
  if (slot.certificateDer) log.debug(`Parsing certificate for slot: ${label}`);
  return slot;
}

function checkedLabel(source: string, field: string, label: string): string {
  const labelBytes = Buffer.byteLength(label, "utf8");
  if (labelBytes > MAX_LABEL_BYTES) {
    // Truncating would make the token unreachable by the label the user wrote (pkcs11:token=...), so refuse.
    throw new ConfigError(source, field, `'${label}' is ${labelBytes} bytes of UTF-8; a token label holds at most ${MAX_LABEL_BYTES}`);
  }
  return label;
}

/** https://my-vault.vault.azure.net -> my-vault: a vault token's default label. */
function vaultName(vaultUrl: string): string {
  return new URL(vaultUrl).hostname.split(".")[0] ?? vaultUrl;
}

function parseBase64Certificate(source: string, field: string, value: string): Buffer {
  const compact = value.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) {
    throw new ConfigError(source, field, "is not base64 (expected base64 DER, e.g. `openssl x509 -outform der | openssl base64 -A`)");
  }
  return parseCertificate(source, field, Buffer.from(compact, "base64"), "the decoded value");
}

/** The certificates of a PEM file in order (the key's first, then its chain), or the one of a DER file. */
function readCertificateFile(source: string, field: string, file: string): Buffer[] {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw new ConfigError(source, field, `cannot read ${file}: ${describeFsError(error)}`);
  }
  const blocks = bytes.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) return [parseCertificate(source, field, bytes, file)];
  if (blocks.length > 1 + MAX_AUTHORITY_CERTIFICATES) {
    throw new ConfigError(source, field, `${file} holds ${blocks.length} certificates; a token shows the key's and at most ${MAX_AUTHORITY_CERTIFICATES} CA certificates`);
  }
  return blocks.map((block, index) => parseCertificate(source, field, Buffer.from(block, "latin1"), index === 0 ? file : `certificate ${index + 1} in ${file}`));
}

function parseCertificate(source: string, field: string, input: Buffer, what: string): Buffer {
  try {
    return Buffer.from(new X509Certificate(input).raw);
  } catch (error) {
    throw new ConfigError(source, field, `${what} is not a valid X.509 certificate (PEM or DER): ${(error as Error).message}`);
  }
}

function readCaFile(source: string, field: string, file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(source, field, `cannot read ${file}: ${describeFsError(error)}`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ConfigError(source, field, `${file} holds no PEM certificate`);
  blocks.forEach((block, index) => {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new ConfigError(source, field, `certificate ${index + 1} in ${file} is not valid X.509: ${(error as Error).message}`);
    }
  });
  return file;
}

function checkDuplicateLabels(source: string, slots: ResolvedSlot[], entries: SlotConfigEntry[]): void {
  const seen = new Map<string, number>();
  slots.forEach((slot, index) => {
    const earlier = seen.get(slot.label);
    if (earlier !== undefined) {
      const how = entries[index]?.label === undefined ? (slot.kind === "key" ? " (the default label: the first 32 characters of key_name)" : " (the default label: the vault's name)") : "";
      throw new ConfigError(source, `slots[${index}].label`, `duplicate label '${slot.label}'${how}, already used by slots[${earlier}]`);
    }
    seen.set(slot.label, index);
  });
}

function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return code ?? (error as Error).message;
  }
}
