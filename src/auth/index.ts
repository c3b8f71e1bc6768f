// Credentials for every vault call, in the order issue 3 fixes:
//   1. AZURE_CLI_ACCESS_TOKEN, a raw bearer token;
//   2. azureauth.json (AZURE_AUTH_LOCATION, $XDG_CONFIG_HOME/azure-keyvault-pkcs11, /etc/azure-keyvault-pkcs11);
//   3. DefaultAzureCredential: environment, workload identity, managed identity, Azure CLI (and the SDK's other
//      developer credentials; AZURE_TOKEN_CREDENTIALS narrows it as usual).
// Each link is tried until it answers once (see chain.ts); tokens are cached and shared (see tokenCache.ts).
import type { TokenCredential } from "@azure/core-auth";
import { ClientSecretCredential, DefaultAzureCredential, type TokenCredentialOptions } from "@azure/identity";
import { log } from "../log/log.ts";
import { AuthFileError, findAuthFile } from "./authFile.ts";
import { CachedChainCredential, type CredentialLink } from "./chain.ts";
import { installSdkLogging } from "./sdkLog.ts";
import { StaticTokenCredential } from "./staticToken.ts";
import { TokenCache } from "./tokenCache.ts";

export { CachedChainCredential, CredentialChainError, isCredentialUnavailable, type CredentialLink } from "./chain.ts";
export { AuthFileError, authFileCandidates, findAuthFile, parseAuthFile } from "./authFile.ts";
export { StaticTokenCredential, jwtExpiry } from "./staticToken.ts";
export { TokenCache } from "./tokenCache.ts";
export { installSdkLogging } from "./sdkLog.ts";

export interface CredentialOptions {
  /**
   * Trust list for https token endpoints (the module's ca_file on top of the system store; see vault/trust.ts).
   * Default: Node's store. Passed as TLS settings, not as an agent: an https agent would break the plain-http
   * managed identity endpoints (App Service, Service Fabric, Arc).
   */
  ca?: string[];
  /** Deadline of one token request in ms. Default 60000. */
  timeoutMs?: number;
}

/** Authority hosts MSAL knows; any other host (ADFS, sovereign test rigs, the emulator) skips instance discovery. */
const KNOWN_AUTHORITY_HOSTS = new Set([
  "login.microsoftonline.com",
  "login.microsoftonline.us",
  "login.chinacloudapi.cn",
  "login.microsoftonline.de",
  "login.windows.net",
  "login.partner.microsoftonline.cn",
]);

export function createCredential(env: NodeJS.ProcessEnv = process.env, options: CredentialOptions = {}): TokenCredential {
  installSdkLogging(env);
  const common: TokenCredentialOptions = options.ca ? { tlsOptions: { ca: options.ca } } : {};
  const links: CredentialLink[] = [];

  const rawToken = env.AZURE_CLI_ACCESS_TOKEN?.trim();
  if (rawToken) {
    links.push({ name: "AZURE_CLI_ACCESS_TOKEN", create: () => new StaticTokenCredential(rawToken) });
  } else {
    log.debug("credential: AZURE_CLI_ACCESS_TOKEN is not set");
  }

  links.push(authFileLink(env, common));

  links.push({
    name: "DefaultAzureCredential",
    create: () => new DefaultAzureCredential({ ...common }),
  });

  return new TokenCache(new CachedChainCredential(links), options.timeoutMs ?? 60_000);
}

function authFileLink(env: NodeJS.ProcessEnv, common: TokenCredentialOptions): CredentialLink {
  // Looked up now, so that the debug log shows the search at start-up as the C++ module did; a broken file is
  // reported when a token is first needed, where the error reaches the caller.
  let found: ReturnType<typeof findAuthFile>;
  let broken: AuthFileError | undefined;
  try {
    found = findAuthFile(env);
  } catch (error) {
    if (!(error instanceof AuthFileError)) throw error;
    broken = error;
    log.error(`credentials file ${error.message}`);
  }
  const name = found ? `azureauth.json (${found.file})` : broken ? `azureauth.json (${broken.file})` : "azureauth.json";
  return {
    name,
    create: (): TokenCredential => {
      if (broken) {
        const error = broken;
        return { getToken: () => Promise.reject(error) };
      }
      if (!found) {
        return {
          getToken: () => Promise.reject(Object.assign(new Error("no credentials file found"), { name: "CredentialUnavailableError" })),
        };
      }
      const authorityHost = env.AZURE_AUTHORITY_HOST?.trim() || undefined;
      const customAuthority = authorityHost !== undefined && !KNOWN_AUTHORITY_HOSTS.has(hostOf(authorityHost));
      log.debug(`credential: service principal ${found.clientId} in tenant ${found.tenantId}${authorityHost ? ` at ${authorityHost}` : ""}`);
      return new ClientSecretCredential(found.tenantId, found.clientId, found.clientSecret, {
        ...common,
        ...(authorityHost ? { authorityHost } : {}),
        ...(customAuthority ? { disableInstanceDiscovery: true } : {}),
      });
    },
  };
}

function hostOf(url: string): string {
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return "";
  }
}
