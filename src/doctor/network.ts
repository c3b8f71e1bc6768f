// The road to one vault, step by step, with the module's own trust list (src/vault/trust.ts): the proxy decision,
// DNS, TCP, TLS, and one unauthenticated request whose 401 carries the vault's clock (Date) and its tenant and
// token resource (WWW-Authenticate), which is where the SDK itself learns them.
import { lookup } from "node:dns/promises";
import { request } from "node:https";
import net from "node:net";
import tls from "node:tls";
import { proxyDecision, proxyFor, TunnelAgent } from "../vault/proxy.ts";
import { buildCaList } from "../vault/trust.ts";
import type { CheckResult } from "./report.ts";

/** The network checks' own deadline: a doctor must answer quickly even where the module would wait longer. */
const PROBE_TIMEOUT_MS = 10_000;
const MAX_CLOCK_SKEW_MS = 60_000;

export interface VaultProbe {
  /** The checks in order; empty steps after the first failure are left out. */
  results: Omit<CheckResult, "slot">[];
  /** False when the vault cannot be reached: the key checks would only repeat the failure. */
  reachable: boolean;
  /** From the vault's challenge, read as the SDK's challenge policy reads it: its tenant and the token scope it wants. */
  tenantId?: string;
  scope?: string;
}

/** A proxy URL without its user and password, which must not reach any output. */
function showProxy(proxy: string): string {
  try {
    const url = new URL(proxy);
    url.username = "";
    url.password = "";
    return url.toString().replace(/\/$/, "");
  } catch {
    return "(not a URL)";
  }
}

/** `abandon` closes what the step opened, so that a black-holed address cannot keep the process alive. */
function withTimeout<T>(promise: Promise<T>, what: string, abandon?: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abandon?.();
      reject(Object.assign(new Error(`${what}: no answer within ${PROBE_TIMEOUT_MS / 1000} s`), { code: "ETIMEDOUT" }));
    }, PROBE_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const code = (error: unknown): string => (error as NodeJS.ErrnoException).code ?? "error";

export async function probeVault(vaultUrl: string, caFiles: readonly string[], env: NodeJS.ProcessEnv): Promise<VaultProbe> {
  const url = new URL(vaultUrl);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port || 443);
  const results: VaultProbe["results"] = [];
  const fail = (check: string, detail: string, fix: string): VaultProbe => {
    results.push({ check, verdict: "FAIL", detail, fix });
    return { results, reachable: false };
  };

  // The module's own decision (src/vault/proxy.ts): the SDK's rules, applied to the vault calls too.
  const decision = proxyDecision(vaultUrl, env);
  let proxy: URL | undefined;
  if (!decision.proxy) {
    results.push({ check: "proxy", verdict: "ok", detail: `no HTTPS_PROXY, ALL_PROXY or HTTP_PROXY: ${host} is reached directly` });
  } else if (decision.bypassedBy !== undefined) {
    results.push({ check: "proxy", verdict: "ok", detail: `NO_PROXY entry '${decision.bypassedBy}' matches ${host}: reached directly, not through ${showProxy(decision.proxy)}` });
  } else {
    try {
      proxy = proxyFor(vaultUrl, env);
    } catch (error) {
      return fail("proxy", (error as Error).message, `set ${decision.variable} to http://host:port (or https://), with user:password@ if the proxy needs them`);
    }
    results.push({ check: "proxy", verdict: "ok", detail: `${host}:${port} is reached through ${showProxy(decision.proxy)} (${decision.variable}), a CONNECT tunnel, as the module reaches it` });
  }
  // Through a proxy, DNS and TCP are the proxy's; TLS and the vault's answer are checked through the tunnel.
  const dnsHost = proxy ? proxy.hostname.replace(/^\[(.*)\]$/, "$1") : host;
  const tcpPort = proxy ? Number(proxy.port || (proxy.protocol === "https:" ? 443 : 80)) : port;
  const via = proxy ? ` (the proxy for ${host})` : "";

  let addresses: string[];
  try {
    addresses = net.isIP(dnsHost) ? [dnsHost] : (await withTimeout(lookup(dnsHost, { all: true }), `DNS lookup of ${dnsHost}`)).map((entry) => entry.address);
  } catch (error) {
    if (proxy) return fail("dns", `cannot resolve ${dnsHost}${via}: ${code(error)}`, `check the proxy's host name in ${decision.variable} and this machine's DNS`);
    return fail("dns", `cannot resolve ${host}: ${code(error)}`, `check the host name in vault_url (or AZURE_KEYVAULT_URL) and this machine's DNS (/etc/resolv.conf); a private endpoint needs its private DNS zone`);
  }
  results.push({ check: "dns", verdict: "ok", detail: `${dnsHost}${via} is ${addresses.join(", ")}` });

  try {
    let socket: net.Socket | undefined;
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket = net.connect({ host: addresses[0]!, port: tcpPort });
        socket.once("connect", () => {
          socket?.destroy();
          resolve();
        });
        socket.once("error", reject);
      }),
      `TCP connection to ${addresses[0]}:${tcpPort}`,
      () => socket?.destroy(),
    );
  } catch (error) {
    if (proxy) return fail("tcp", `cannot connect to the proxy ${addresses[0]}:${tcpPort}${via}: ${code(error)}`, `check that the proxy in ${decision.variable} is up and reachable from this machine`);
    return fail(
      "tcp",
      `cannot connect to ${addresses[0]}:${port} (${host}): ${code(error)}`,
      `make sure the vault at ${vaultUrl} is up and that a firewall, the vault's network rules or a missing private endpoint do not block ${host}:${port} from this machine`,
    );
  }
  results.push({ check: "tcp", verdict: "ok", detail: `connected to ${addresses[0]}:${tcpPort}${via}` });

  const ca = buildCaList(caFiles, env);
  // The same tunnel the module's vault calls take, with the same trust: TLS is then checked by the request below.
  const tunnel = proxy ? new TunnelAgent(proxy, ca ? tls.createSecureContext({ ca }) : undefined, { keepAlive: false }) : undefined;
  const trustNote = caFiles.length > 0 ? `the system store, NODE_EXTRA_CA_CERTS and ${caFiles.join(", ")}` : env.NODE_EXTRA_CA_CERTS ? `the system store and NODE_EXTRA_CA_CERTS (${env.NODE_EXTRA_CA_CERTS})` : "the system store";
  let peer: tls.PeerCertificate | undefined;
  let authorizationError: string | undefined;
  if (tunnel) {
    results.push({ check: "tls", verdict: "ok", detail: `checked through the proxy by the request below, trusting ${trustNote}` });
  } else try {
    let socket: tls.TLSSocket | undefined;
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket = tls.connect({ host: addresses[0]!, port, servername: net.isIP(host) ? undefined : host, ca, rejectUnauthorized: false, checkServerIdentity: (_name, cert) => tls.checkServerIdentity(host, cert) });
        const connected = socket;
        connected.once("secureConnect", () => {
          peer = connected.getPeerCertificate();
          authorizationError = connected.authorized ? undefined : String(connected.authorizationError);
          connected.destroy();
          resolve();
        });
        connected.once("error", reject);
      }),
      `TLS handshake with ${host}:${port}`,
      () => socket?.destroy(),
    );
  } catch (error) {
    return fail("tls", `TLS handshake with ${host}:${port} failed: ${(error as Error).message}`, `check that ${vaultUrl} is an HTTPS endpoint (the scheme and port in vault_url)`);
  }
  const subject = peer?.subject?.CN ?? "(no CN)";
  const issuer = peer?.issuer?.CN ?? peer?.issuer?.O ?? "(unknown issuer)";
  if (authorizationError !== undefined) {
    const fix = /ALTNAME|Hostname|IP: .* is not in the cert's list/i.test(authorizationError)
      ? `the certificate is for ${peer?.subjectaltname ?? subject}, not ${host}: check the host in vault_url`
      : /EXPIRED|NOT_YET_VALID/.test(authorizationError)
        ? "check this machine's clock; if it is right, the server's certificate is out of date"
        : `trust the CA that issued the vault's certificate (${issuer}): add its PEM with "ca_file" in config.json, or set NODE_EXTRA_CA_CERTS=<file.pem> in the environment of the programs that load the module (a TLS-inspecting proxy or the emulator needs its own CA)`;
    return fail("tls", `the certificate of ${host}:${port} (CN=${subject}, issued by ${issuer}) is not trusted: ${authorizationError}; trusted: ${trustNote}`, fix);
  }
  results.push({ check: "tls", verdict: "ok", detail: `CN=${subject}, issued by ${issuer}, valid until ${peer?.valid_to ?? "?"}; trusted by ${trustNote}` });

  const probe: VaultProbe = { results, reachable: true };
  try {
    const started = Date.now();
    let req: ReturnType<typeof request> | undefined;
    const answer = await withTimeout(
      new Promise<{ status: number; date?: string; challenge?: string }>((resolve, reject) => {
        req = request(new URL("/keys?api-version=7.4", vaultUrl), { method: "GET", ca, agent: tunnel ?? false }, (response) => {
          response.resume();
          resolve({ status: response.statusCode ?? 0, date: response.headers.date, challenge: response.headers["www-authenticate"] });
        });
        req.once("error", reject);
        req.end();
      }),
      `GET ${vaultUrl}/keys`,
      () => req?.destroy(),
    );
    const roundTrip = Date.now() - started;
    // As @azure/keyvault-common's parseWWWAuthenticateHeader (not exported): the tenant is the authorization URL's
    // path, the scope `${resource}/.default`, else the challenge's scope.
    const field = (name: string): string | undefined => new RegExp(`\\b${name}="([^"]*)"`).exec(answer.challenge ?? "")?.[1];
    const challenge = field("authorization") ?? field("authorization_uri");
    let tenant: string | undefined;
    try {
      tenant = challenge ? new URL(challenge).pathname.substring(1) || undefined : undefined;
    } catch {
      tenant = undefined;
    }
    const resource = field("resource");
    const scope = resource ? `${resource}/.default` : field("scope");
    if (tenant) probe.tenantId = tenant;
    if (scope) probe.scope = scope;
    if (answer.status !== 401 || !challenge) {
      results.push({
        check: "vault endpoint",
        verdict: "warn",
        detail: `an unauthenticated request got ${answer.status} without a Key Vault challenge: ${vaultUrl} may not be a Key Vault`,
        fix: "check vault_url: it is https://<name>.vault.azure.net/ (or .managedhsm.azure.net) with no path",
      });
    } else {
      results.push({ check: "vault endpoint", verdict: "ok", detail: `answers as Key Vault (tenant ${tenant ?? "?"}, token scope ${scope ?? "?"})` });
    }
    const vaultTime = answer.date ? Date.parse(answer.date) : Number.NaN;
    if (Number.isNaN(vaultTime)) {
      results.push({ check: "clock", verdict: "warn", detail: `the vault sent no usable Date header (${answer.date ?? "none"}); the clock is not checked`, fix: "check the clock by other means (timedatectl)" });
    } else {
      // Date has a resolution of one second and was written about half a round trip ago.
      const skew = started + roundTrip / 2 - vaultTime;
      const seconds = Math.round(skew / 1000);
      const line =
        Math.abs(skew) < 2000
          ? `in step with the vault, within the 1 s resolution of its Date header (${answer.date})`
          : `this machine is ${Math.abs(seconds)} s ${skew >= 0 ? "ahead of" : "behind"} the vault (Date: ${answer.date})`;
      if (Math.abs(skew) > MAX_CLOCK_SKEW_MS + 1000) {
        results.push({ check: "clock", verdict: "warn", detail: line, fix: "synchronise the clock (timedatectl set-ntp true, or chrony/ntpd): tokens and keys' nbf/exp are checked against it" });
      } else {
        results.push({ check: "clock", verdict: "ok", detail: line });
      }
    }
  } catch (error) {
    results.push({
      check: "vault endpoint",
      verdict: "FAIL",
      detail: `GET ${vaultUrl}/keys failed${tunnel ? " through the proxy" : " after the TLS handshake"}: ${(error as Error).message}`,
      fix: tunnel ? `check the proxy's answer above; it must allow CONNECT to ${host}:${port}, and ca_file must trust a TLS-inspecting proxy's CA` : "check that nothing between this machine and the vault cuts HTTPS requests",
    });
    probe.reachable = false;
  } finally {
    tunnel?.destroy();
  }
  return probe;
}
