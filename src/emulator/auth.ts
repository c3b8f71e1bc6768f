// Tokens: the emulator is its own identity provider. It issues JWT-shaped access tokens signed with HMAC-SHA256
// under a secret that lives only in this process, so a token from anywhere else (or from an earlier run) fails the
// signature check, and an expired one fails the exp check. The data plane answers both with Key Vault's 401.
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { KeyVaultError } from "./errors.ts";

export const VAULT_RESOURCE = "https://vault.azure.net";
export const MANAGED_HSM_RESOURCE = "https://managedhsm.azure.net";

/** Who a verified token names: what a 403 quotes back. */
export interface Caller {
  appid: string;
  oid: string;
  iss: string;
}

export interface IssuedToken {
  accessToken: string;
  expiresOn: number;
  resource: string;
}

/** "https://vault.azure.net/.default" or "https://vault.azure.net/" → "https://vault.azure.net". */
export function resourceFromScope(scope: string): string {
  return scope.replace(/\/\.default$/, "").replace(/\/+$/, "");
}

export class TokenService {
  private readonly secret = randomBytes(32);
  /** Identity the tokens describe: a managed identity or a client-credentials app, for the `oid`/`appid` claims. */
  readonly principalId = randomUUID();
  /**
   * Tokens whose signature and audience already checked out, with their exp: a client sends the same token on every
   * request, so later requests skip the HMAC and the claims' JSON. Expiry is still checked on every request.
   */
  private readonly verified = new Map<string, { exp: number; caller: Caller }>();

  constructor(
    readonly tenantId: string,
    private readonly lifetimeSeconds: number,
    /** The audience the data plane accepts, and the challenge's resource: the vault's or Managed HSM's. */
    readonly resource: string = VAULT_RESOURCE,
  ) {}

  issue(resource: string, clientId: string): IssuedToken {
    const now = Math.floor(Date.now() / 1000);
    const expiresOn = now + this.lifetimeSeconds;
    const header = Buffer.from(JSON.stringify({ typ: "JWT", alg: "HS256", kid: "emulator" })).toString("base64url");
    const claims = {
      aud: resource,
      iss: `https://sts.windows.net/${this.tenantId}/`,
      iat: now,
      nbf: now,
      exp: expiresOn,
      appid: clientId,
      oid: this.principalId,
      sub: this.principalId,
      tid: this.tenantId,
      uti: randomBytes(12).toString("base64url"),
      ver: "1.0",
    };
    const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
    const signature = createHmac("sha256", this.secret).update(`${header}.${payload}`).digest("base64url");
    return { accessToken: `${header}.${payload}.${signature}`, expiresOn, resource };
  }

  /** Checks an Authorization header and returns who it names; throws the 401 the data plane must send. */
  verify(authorization: string | undefined): Caller {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    if (!match) throw this.unauthorized("AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.");
    const token = match[1]!;
    const known = this.verified.get(token);
    if (known !== undefined) {
      const now = Math.floor(Date.now() / 1000);
      if (now < known.exp) return known.caller;
      this.verified.delete(token);
      throw this.unauthorized(`Invalid bearer token: the token expired at ${known.exp} (now ${now}).`);
    }
    const parts = token.split(".");
    if (parts.length !== 3) throw this.unauthorized("Invalid bearer token: the token is malformed.");
    const [header, payload, signature] = parts as [string, string, string];
    const expected = createHmac("sha256", this.secret).update(`${header}.${payload}`).digest();
    const given = Buffer.from(signature, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw this.unauthorized("AKV10046: Unable to resolve the key used for signature validation.");
    }
    let claims: { aud?: string; exp?: number; nbf?: number; appid?: string; oid?: string; iss?: string };
    try {
      claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    } catch {
      throw this.unauthorized("Invalid bearer token: the token is malformed.");
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.exp !== "number" || now >= claims.exp) {
      throw this.unauthorized(`Invalid bearer token: the token expired at ${claims.exp} (now ${now}).`);
    }
    if (resourceFromScope(claims.aud ?? "") !== this.resource) {
      throw this.unauthorized(`AKV10022: Invalid audience. Expected ${this.resource}, found: ${claims.aud}.`);
    }
    const caller = { appid: claims.appid ?? "", oid: claims.oid ?? "", iss: claims.iss ?? "" };
    // Bounded: a long run that issues many tokens starts over rather than growing without end.
    if (this.verified.size >= 1000) this.verified.clear();
    this.verified.set(token, { exp: claims.exp, caller });
    return caller;
  }

  private unauthorized(message: string): KeyVaultError {
    return new KeyVaultError(401, "Unauthorized", message, undefined, { "WWW-Authenticate": challengeHeader(this.tenantId, this.resource) });
  }
}

export function challengeHeader(tenantId: string, resource: string = VAULT_RESOURCE): string {
  return `Bearer authorization="https://login.microsoftonline.com/${tenantId}", resource="${resource}"`;
}
