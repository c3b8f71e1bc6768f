// Link 2 of the credential chain: the C++ module's azureauth.json ({tenant, appId, password}, the output of
// `az ad sp create-for-rbac`), looked up at AZURE_AUTH_LOCATION, then the XDG path, then /etc.
import { readFileSync } from "node:fs";
import path from "node:path";
import { configHome } from "../config/load.ts";
import { log } from "../log/log.ts";

export interface ServicePrincipalSecret {
  file: string;
  tenantId: string;
  clientId: string;
  clientSecret: string;
}

/** Thrown when a credentials file exists but cannot be used: a broken file must not silently fall through. */
export class AuthFileError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = "AuthFileError";
  }
}

export function authFileCandidates(env: NodeJS.ProcessEnv): string[] {
  const candidates: string[] = [];
  if (env.AZURE_AUTH_LOCATION) candidates.push(path.resolve(env.AZURE_AUTH_LOCATION));
  candidates.push(path.join(configHome(env), "azure-keyvault-pkcs11", "azureauth.json"));
  candidates.push("/etc/azure-keyvault-pkcs11/azureauth.json");
  return candidates;
}

/** The first readable credentials file, parsed; undefined when there is none. */
export function findAuthFile(env: NodeJS.ProcessEnv): ServicePrincipalSecret | undefined {
  for (const file of authFileCandidates(env)) {
    log.debug(`Attempting to load credentials from path: ${file}`);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // The C++ module skipped files it could not open; keep that, but say why.
      log.debug(`Skipping ${file}: ${code === "ENOENT" ? "not found" : `cannot read (${code ?? "error"})`}`);
      continue;
    }
    return parseAuthFile(file, text);
  }
  return undefined;
}

export function parseAuthFile(file: string, text: string): ServicePrincipalSecret {
  let document: unknown;
  try {
    document = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch {
    throw new AuthFileError(file, "invalid JSON (expected {\"tenant\": ..., \"appId\": ..., \"password\": ...})");
  }
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    throw new AuthFileError(file, "must be a JSON object with tenant, appId and password");
  }
  const fields = document as Record<string, unknown>;
  // The sdk-auth spelling (tenantId, clientId, clientSecret) is accepted too.
  const pick = (primary: string, alias: string): string => {
    const value = fields[primary] ?? fields[alias];
    if (typeof value !== "string" || value.trim() === "") throw new AuthFileError(file, `the field '${primary}' is missing or empty`);
    return value.trim();
  };
  const tenantId = pick("tenant", "tenantId");
  const clientId = pick("appId", "clientId");
  const clientSecret = pick("password", "clientSecret");
  if (!/^[0-9A-Za-z.-]+$/.test(tenantId)) throw new AuthFileError(file, "the field 'tenant' must be a tenant id or domain name");
  return { file, tenantId, clientId, clientSecret };
}
