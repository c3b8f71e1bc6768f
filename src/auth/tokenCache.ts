// One token per (scopes, tenant) for the whole helper. Every Key Vault pipeline has its own bearer policy with its
// own cycler; without this layer each client would ask the identity provider separately. Concurrent callers share
// one request, and a token is refreshed in the background well before it expires.
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/core-auth";
import { log } from "../log/log.ts";

/** Refresh this long before expiry (capped at half the token's lifetime for short-lived tokens). */
const REFRESH_MARGIN_MS = 5 * 60 * 1000;
/** A cached token is not handed out when it expires sooner than this. */
const MIN_VALIDITY_MS = 30 * 1000;

interface Entry {
  token: AccessToken;
  refreshAt: number;
}

export class TokenCache implements TokenCredential {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<AccessToken>>();

  constructor(
    private readonly source: TokenCredential,
    private readonly requestTimeoutMs: number,
  ) {}

  async getToken(scopes: string | string[], options: GetTokenOptions = {}): Promise<AccessToken> {
    const key = cacheKey(scopes, options);
    // A claims challenge (CAE) means the cached token was rejected: go to the source, and cache the new token.
    const entry = options.claims ? undefined : this.entries.get(key);
    const now = Date.now();
    if (entry && now < entry.refreshAt) return entry.token;
    if (entry && now < entry.token.expiresOnTimestamp - MIN_VALIDITY_MS) {
      this.fetch(key, scopes, options).catch((error: unknown) => {
        log.warn(`token refresh failed; the current token stays in use until it expires: ${(error as Error).message}`);
      });
      return entry.token;
    }
    return withAbort(this.fetch(key, scopes, options), options.abortSignal);
  }

  private fetch(key: string, scopes: string | string[], options: GetTokenOptions): Promise<AccessToken> {
    const running = this.inflight.get(key);
    if (running) return running;
    const started = Date.now();
    // The shared request must not die with the first caller's abort signal; it gets its own deadline instead.
    const { abortSignal: _callerSignal, ...shared } = options;
    const request = this.source
      .getToken(scopes, { ...shared, abortSignal: AbortSignal.timeout(this.requestTimeoutMs) })
      .then((token) => {
        if (!token) throw new Error("the credential returned no token");
        this.entries.set(key, { token, refreshAt: refreshTime(token, Date.now()) });
        log.debug(`token for ${scopeList(scopes)} obtained in ${Date.now() - started} ms, expires ${new Date(token.expiresOnTimestamp).toISOString()}`);
        return token;
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, request);
    return request;
  }
}

function refreshTime(token: AccessToken, now: number): number {
  if (token.refreshAfterTimestamp !== undefined) return Math.min(token.refreshAfterTimestamp, token.expiresOnTimestamp - MIN_VALIDITY_MS);
  const lifetime = token.expiresOnTimestamp - now;
  return token.expiresOnTimestamp - Math.min(REFRESH_MARGIN_MS, Math.max(0, lifetime / 2));
}

function scopeList(scopes: string | string[]): string {
  return (Array.isArray(scopes) ? [...scopes] : [scopes]).sort().join(" ");
}

function cacheKey(scopes: string | string[], options: GetTokenOptions): string {
  return `${scopeList(scopes)}|${options.tenantId ?? ""}`;
}

function withAbort<T>(promise: Promise<T>, signal: GetTokenOptions["abortSignal"]): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

function abortError(): Error {
  const error = new Error("The operation was aborted while waiting for a token.");
  error.name = "AbortError";
  return error;
}
