// The module's credential chain (src/auth/), built and asked for a token exactly as the vault backend does it. The
// chain reports which links it tried and why each one passed only through its debug log lines, so they are
// captured while it runs: that keeps the doctor on the module's own code instead of a copy of its rules.
import type { TokenCredential } from "@azure/core-auth";
import { authFileCandidates, createCredential, CredentialChainError, jwtExpiry } from "../auth/index.ts";
import type { ModuleConfig } from "../config/types.ts";
import { isDebug, setDebug, withLogSink } from "../log/log.ts";
import { buildCaList } from "../vault/trust.ts";
import type { Report } from "./report.ts";

/** A token that cannot be refreshed and ends sooner than this is worth a warning. */
const SHORT_LIFETIME_MS = 15 * 60 * 1000;

export interface CredentialOutcome {
  credential: TokenCredential;
  /** The `tid` claim of the token, when it is a JWT. */
  tenantId?: string;
}

function claims(token: string): Record<string, unknown> | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const value = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as unknown;
    return value !== null && typeof value === "object" ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The chain's own debug lines about its links, without the log prefix. */
function chainLines(lines: string[]): string[] {
  return lines
    .map((line) => line.replace(/^AZURE_KEYVAULT: (?:error: |warning: )?/, "").trimEnd())
    .filter((line) => line.startsWith("credential: ") || line.startsWith("credentials file "));
}

const CREDENTIAL_FIX =
  "give the module an Azure identity: a managed identity, AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET (or a workload identity), `az login`, an azureauth.json, or AZURE_CLI_ACCESS_TOKEN (docs/configuration.md)";

/** `scope` and `tenantId` as the vault's challenge gives them, which is how the SDK asks for the module's token. */
export async function checkCredential(env: NodeJS.ProcessEnv, config: ModuleConfig, scope: string, tenantId: string | undefined, report: Report): Promise<CredentialOutcome | undefined> {
  const captured: string[] = [];
  const sink = (line: string): boolean => {
    captured.push(line);
    return true;
  };
  const debugWas = isDebug();
  setDebug(true);
  let credential: TokenCredential;
  let token;
  let failure: unknown;
  try {
    // The same arguments as AzureVaultBackend's constructor gives createCredential.
    credential = withLogSink(sink, () => createCredential(env, { ca: buildCaList(config.caFiles, env), timeoutMs: config.timeoutMs }));
    // The options of @azure/keyvault-common's challenge policy: CAE on, and the tenant the vault named.
    token = await withLogSink(sink, () => credential.getToken([scope], { enableCae: true, ...(tenantId ? { tenantId } : {}) })).catch((error: unknown) => {
      failure = error;
      return null;
    });
  } finally {
    setDebug(debugWas);
  }

  let chosen: string | undefined;
  let stoppedAt: string | undefined;
  let brokenFile: string | undefined;
  for (const line of chainLines(captured)) {
    let match: RegExpExecArray | null;
    if (line === "credential: AZURE_CLI_ACCESS_TOKEN is not set") {
      report.ok("credential link", "AZURE_CLI_ACCESS_TOKEN: not set, skipped");
    } else if ((match = /^credential: (.+?) unavailable: (.*)$/.exec(line))) {
      const [, name, reason] = match as unknown as [string, string, string];
      if (name === "AZURE_CLI_ACCESS_TOKEN") {
        // Set on purpose and silently passed over: worth knowing even when a later link works.
        report.warn("credential link", `AZURE_CLI_ACCESS_TOKEN: set but not usable, skipped: ${reason}`, "unset AZURE_CLI_ACCESS_TOKEN, or put a fresh token in it (`az account get-access-token --resource https://vault.azure.net`)");
      } else {
        const searched = name === "azureauth.json" ? ` (searched ${authFileCandidates(env).join(", ")})` : "";
        report.ok("credential link", `${name}: not available, skipped: ${reason}${searched}`);
      }
    } else if ((match = /^credential: using (.+)$/.exec(line))) {
      chosen = match[1];
      report.ok("credential link", `${chosen}: chosen`);
    } else if ((match = /^credential: (.+?) failed: (.*)$/.exec(line))) {
      stoppedAt = match[1];
      report.fail("credential link", `${match[1]}: failed, and the chain stops here: ${match[2]}`, `fix this credential (the message says what is wrong) or remove it so that the chain goes on to the next one`);
    } else if (line.startsWith("credentials file ")) {
      brokenFile = line.slice("credentials file ".length);
    }
  }
  // A broken azureauth.json is reported where the chain reaches it; one behind the chosen link is only a warning.
  if (brokenFile !== undefined && stoppedAt === undefined) {
    report.warn("credential link", `azureauth.json: ${brokenFile}; not used, since an earlier link was chosen`, "fix the file (JSON with tenant, appId and password, as `az ad sp create-for-rbac` writes it) or remove it");
  }

  if (!token) {
    // A chain that ran out of links has said why for each one above.
    const message =
      failure instanceof CredentialChainError
        ? "no credential link could get one (see the credential links above)"
        : stoppedAt !== undefined
          ? `the chain stopped at ${stoppedAt} (see above)`
          : failure instanceof Error
            ? failure.message
            : "the credential returned no token";
    report.fail("credential", `no token for ${scope}: ${message}`, CREDENTIAL_FIX);
    return undefined;
  }
  const tokenClaims = claims(token.token);
  const tokenTenant = typeof tokenClaims?.tid === "string" ? tokenClaims.tid : undefined;
  const expiry = jwtExpiry(token.token) ?? token.expiresOnTimestamp;
  const minutes = Math.round((expiry - Date.now()) / 60_000);
  const who = typeof tokenClaims?.appid === "string" ? `, app ${tokenClaims.appid}` : typeof tokenClaims?.upn === "string" ? `, user ${tokenClaims.upn}` : "";
  const detail = `token from ${chosen ?? "the chain"} for ${scope}: tenant ${tokenTenant ?? "unknown (not a JWT)"}${who}, expires ${new Date(expiry).toISOString()} (in ${minutes} min)`;
  if (chosen === "AZURE_CLI_ACCESS_TOKEN" && expiry - Date.now() < SHORT_LIFETIME_MS) {
    report.warn("credential", `${detail}; a raw token cannot be refreshed`, "get a new one (`az account get-access-token --resource https://vault.azure.net`), or use a credential that refreshes itself");
  } else {
    report.ok("credential", detail);
  }
  return { credential, ...(tokenTenant === undefined ? {} : { tenantId: tokenTenant }) };
}
