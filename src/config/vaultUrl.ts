// Vault URLs arrive in several spellings (trailing slash, upper-case host, default port); the rest of the module
// compares and joins them, so they are reduced to one form here: the URL's origin, without a trailing slash.

export type VaultUrlResult = { ok: true; url: string } | { ok: false; reason: string };

export function normaliseVaultUrl(raw: string): VaultUrlResult {
  let parsed: URL;
  try {
    parsed = new URL(raw.trim());
  } catch {
    return { ok: false, reason: `'${raw}' is not a URL` };
  }
  if (parsed.protocol !== "https:") {
    return { ok: false, reason: `'${raw}' must use https (Key Vault only speaks TLS)` };
  }
  if (parsed.username || parsed.password) {
    return { ok: false, reason: `'${raw}' must not contain credentials` };
  }
  if ((parsed.pathname !== "/" && parsed.pathname !== "") || parsed.search || parsed.hash) {
    return { ok: false, reason: `'${raw}' must be the vault's base URL, without a path, query or fragment` };
  }
  return { ok: true, url: parsed.origin };
}

/** Loopback hosts get no challenge resource verification: a local vault cannot match *.vault.azure.net. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4) return v4.slice(1).every((part) => Number(part) <= 255);
  // IPv4-mapped IPv6 loopback, as URL normalises it: ::ffff:7f00:1
  const mapped = /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.exec(host);
  return mapped !== null;
}

export function isManagedHsmHost(hostname: string): boolean {
  return hostname.toLowerCase().endsWith(".managedhsm.azure.net");
}
