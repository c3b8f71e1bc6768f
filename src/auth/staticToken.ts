// Link 1 of the credential chain: AZURE_CLI_ACCESS_TOKEN, a bearer token obtained elsewhere (for example
// `az account get-access-token --resource https://vault.azure.net`). It cannot be refreshed, so its expiry is
// taken from the JWT `exp` claim when there is one.
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/core-auth";
import { CredentialUnavailableError } from "@azure/identity";
import { log } from "../log/log.ts";

const ASSUMED_LIFETIME_MS = 60 * 60 * 1000;

/** The `exp` claim of a JWT in ms since the epoch, or undefined when the token is not a JWT with one. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as { exp?: unknown };
    return typeof claims.exp === "number" && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class StaticTokenCredential implements TokenCredential {
  private readonly expiresOnTimestamp: number | undefined;
  private reported = false;

  constructor(private readonly token: string) {
    this.expiresOnTimestamp = jwtExpiry(token);
  }

  async getToken(_scopes: string | string[], _options?: GetTokenOptions): Promise<AccessToken> {
    const now = Date.now();
    if (this.expiresOnTimestamp !== undefined && this.expiresOnTimestamp <= now) {
      throw new CredentialUnavailableError(`AZURE_CLI_ACCESS_TOKEN expired at ${new Date(this.expiresOnTimestamp).toISOString()}`);
    }
    if (!this.reported) {
      this.reported = true;
      log.debug(
        this.expiresOnTimestamp === undefined
          ? "AZURE_CLI_ACCESS_TOKEN is not a JWT with an exp claim; assuming it is valid for an hour at a time"
          : `AZURE_CLI_ACCESS_TOKEN expires at ${new Date(this.expiresOnTimestamp).toISOString()}`,
      );
    }
    // Without an exp claim nothing is known; a rolling hour keeps the bearer policy from asking on every call.
    return { token: this.token, expiresOnTimestamp: this.expiresOnTimestamp ?? now + ASSUMED_LIFETIME_MS, tokenType: "Bearer" };
  }
}
