// Every failure of a remote call becomes a VaultError with a kind the PKCS#11 core can map to a CK_RV and a
// message a user can act on, e.g. "Key Vault refused sign on key 'x': Operation sign is not permitted on this
// key. (403 Forbidden)".
import { STATUS_CODES } from "node:http";
import { VaultError, type VaultErrorKind } from "./types.ts";

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EHOSTDOWN",
  "ETIMEDOUT",
  "ESOCKETTIMEDOUT",
  "EADDRNOTAVAIL",
  "REQUEST_SEND_ERROR",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
]);

const AUTH_ERROR_NAMES = new Set([
  "CredentialChainError",
  "CredentialUnavailableError",
  "AuthenticationError",
  "AggregateAuthenticationError",
  "AuthenticationRequiredError",
  "AuthFileError",
]);

export interface CallContext {
  /** "sign", "decrypt", "get key", "list keys", ... */
  operation: string;
  /** "key 'x'" or "vault https://..." */
  target: string;
  /** The call's deadline signal: an abort caused by it is a timeout. */
  deadline?: AbortSignal;
  timeoutMs?: number;
}

interface RestLike {
  name?: string;
  message?: string;
  code?: string;
  statusCode?: number;
  cause?: unknown;
  details?: { error?: { code?: string; message?: string } };
  response?: { bodyAsText?: string | null; parsedBody?: unknown; headers?: { get(name: string): string | undefined } };
}

export function toVaultError(error: unknown, context: CallContext): VaultError {
  if (error instanceof VaultError) return error;
  const e = (error ?? {}) as RestLike;
  const what = `${context.operation} on ${context.target}`;
  if (e.name === "AbortError" || context.deadline?.aborted) {
    if (context.deadline?.aborted) {
      return new VaultError("timeout", `Key Vault did not answer ${what} within ${context.timeoutMs ?? "the"} ms (AZURE_KEYVAULT_PKCS11_TIMEOUT_MS)`);
    }
    return new VaultError("timeout", `${what} was cancelled`);
  }
  if (typeof e.name === "string" && AUTH_ERROR_NAMES.has(e.name)) {
    return new VaultError("auth", `cannot authenticate for ${what}: ${e.message ?? String(error)}`, undefined, e.name);
  }
  if (typeof e.message === "string" && e.message.includes("does not match the requested domain")) {
    return new VaultError("auth", `refusing ${what}: ${e.message}`, undefined, "ChallengeResourceMismatch");
  }
  const status = typeof e.statusCode === "number" && e.statusCode > 0 ? e.statusCode : undefined;
  if (status !== undefined) {
    const service = serviceError(e);
    const code = service.code ?? e.code;
    const dropped = e.response?.headers?.get("x-akv-pkcs11-retry-after-dropped");
    const waitNote = dropped ? `; it asked to retry after ${Math.ceil(Number(dropped) / 1000)} s, past this call's deadline` : "";
    const message = `Key Vault refused ${what}: ${service.message ?? e.message ?? "no details"} (${status} ${STATUS_CODES[status] ?? ""}${waitNote})`.replace(/ \)$/, ")");
    return new VaultError(kindForStatus(status), message, status, code);
  }
  const code = networkCode(e);
  if (code !== undefined) {
    return new VaultError("network", `cannot reach Key Vault for ${what}: ${e.message ?? code} (${code})`, undefined, code);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new VaultError("other", `${what} failed: ${message}`, undefined, e.code);
}

function kindForStatus(status: number): VaultErrorKind {
  switch (status) {
    case 400:
      return "bad-parameter";
    case 401:
      return "auth";
    case 403:
      return "forbidden";
    case 404:
      return "not-found";
    case 409:
      return "conflict";
    case 408:
    case 504:
      return "timeout";
    case 429:
      return "throttled";
    default:
      return "other";
  }
}

function serviceError(e: RestLike): { code?: string; message?: string } {
  if (e.details?.error) return e.details.error;
  const body = e.response?.parsedBody as { error?: { code?: string; message?: string } } | undefined;
  if (body?.error) return body.error;
  if (e.response?.bodyAsText) {
    try {
      const parsed = JSON.parse(e.response.bodyAsText) as { error?: { code?: string; message?: string } };
      if (parsed.error) return parsed.error;
    } catch {
      // Not JSON: fall back to the RestError's own message.
    }
  }
  return {};
}

function networkCode(e: RestLike): string | undefined {
  for (let current: RestLike | undefined = e, depth = 0; current && depth < 4; current = current.cause as RestLike | undefined, depth++) {
    if (typeof current.code === "string" && NETWORK_CODES.has(current.code)) return current.code;
  }
  return undefined;
}
