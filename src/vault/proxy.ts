// The proxy for vault requests. The backend gives every vault client its own agent (trust list, keep-alive), and
// the SDK's proxyPolicy leaves a request that has an agent alone, so the module decides here, with the SDK's own
// rules, and tunnels through the proxy itself; token requests keep going through the SDK's policy.
import type { ClientRequest } from "node:http";
import type { Socket } from "node:net";
import { checkServerIdentity, type SecureContext } from "node:tls";
import { HttpsProxyAgent, type HttpsProxyAgentOptions } from "https-proxy-agent";
import { log } from "../log/log.ts";
import { VaultError } from "./types.ts";

export interface ProxyDecision {
  /** The proxy URL as configured, credentials included: never log it (see proxyHost). */
  proxy?: string;
  /** The variable it came from, e.g. "https_proxy". */
  variable?: string;
  /** The NO_PROXY entry that exempts the URL. */
  bypassedBy?: string;
}

/** As the SDK reads a variable: upper case first, an empty value counts as unset. */
function envEntry(env: NodeJS.ProcessEnv, name: string): { value: string; variable: string } | undefined {
  if (env[name]) return { value: env[name], variable: name };
  const lower = name.toLowerCase();
  return env[lower] ? { value: env[lower], variable: lower } : undefined;
}

/**
 * What @typespec/ts-http-runtime's proxyPolicy (under @azure/core-rest-pipeline) decides for a URL, from `env`
 * instead of process.env: HTTPS_PROXY, else ALL_PROXY, else HTTP_PROXY, unless a NO_PROXY entry equals the host
 * name or, starting with a dot, ends it (".example.com" also matches "example.com"). Like the SDK: no "*", no
 * ports (an entry "host:443" matches nothing), no CIDR, and loopback hosts are not exempt by themselves.
 */
export function proxyDecision(url: string, env: NodeJS.ProcessEnv): ProxyDecision {
  const found = envEntry(env, "HTTPS_PROXY") ?? envEntry(env, "ALL_PROXY") ?? envEntry(env, "HTTP_PROXY");
  if (!found) return {};
  const host = new URL(url).hostname;
  const entries = (envEntry(env, "NO_PROXY")?.value ?? "").split(",").map((item) => item.trim()).filter((item) => item !== "");
  const match = entries.find((pattern) => (pattern.startsWith(".") ? host.endsWith(pattern) || host === pattern.slice(1) : host === pattern));
  const decision: ProxyDecision = { proxy: found.value, variable: found.variable };
  if (match !== undefined) decision.bypassedBy = match;
  return decision;
}

/** The proxy that carries requests to `url`, or undefined to connect directly. */
export function proxyFor(url: string, env: NodeJS.ProcessEnv): URL | undefined {
  const decision = proxyDecision(url, env);
  if (decision.proxy === undefined) return undefined;
  if (decision.bypassedBy !== undefined) {
    log.debug(`${url}: NO_PROXY entry '${decision.bypassedBy}' matches, connecting directly`);
    return undefined;
  }
  let proxy: URL | undefined;
  try {
    proxy = new URL(decision.proxy);
  } catch {
    proxy = undefined;
  }
  // The value itself stays out of the message: it may carry a password.
  if (!proxy || (proxy.protocol !== "http:" && proxy.protocol !== "https:") || proxy.hostname === "") {
    throw new VaultError("other", `${decision.variable} is not an http:// or https:// proxy URL; cannot reach ${url} through it`);
  }
  log.debug(`${url}: through the proxy ${proxyHost(proxy)} (${decision.variable})`);
  return proxy;
}

/** host:port of a proxy, without its user and password. */
export function proxyHost(proxy: URL): string {
  return `${proxy.hostname}:${proxy.port || (proxy.protocol === "https:" ? 443 : 80)}`;
}

type ConnectOptions = Parameters<HttpsProxyAgent<string>["connect"]>[1];

/**
 * CONNECT through the proxy, then TLS to the vault with the module's trust list. HttpsProxyAgent hands its
 * constructor options to the proxy connection only, and takes the vault connection's from each request, so the
 * trust list is added there.
 */
export class TunnelAgent extends HttpsProxyAgent<string> {
  private readonly where: string;

  constructor(
    proxy: URL,
    private readonly secureContext: SecureContext | undefined,
    options: HttpsProxyAgentOptions<string>,
  ) {
    // The same trust for an https:// proxy: a corporate proxy's certificate is what ca_file is typically for.
    super(proxy, { ...options, ...(secureContext ? { secureContext } : {}) });
    this.where = proxyHost(proxy);
  }

  /**
   * Vault URLs are always https (the SDK refuses a bearer token over http). agent-base otherwise guesses from the
   * call stack when the request names no protocol, as the SDK's requests do; at a socket's release that guess says
   * http, so the socket is pooled under another name than the one the next request looks up, and keep-alive is lost.
   */
  override isSecureEndpoint(): boolean {
    return true;
  }

  override async connect(req: ClientRequest, options: ConnectOptions): Promise<Socket> {
    const host = (options.host ?? "").replace(/^\[|\]$/g, "");
    // An IP vault gets no servername, and Node would then check the certificate against the proxy's host name.
    const target = { ...options, checkServerIdentity: (_name: string, cert: Parameters<typeof checkServerIdentity>[1]) => checkServerIdentity(host, cert) };
    let refusal: { statusCode: number; statusText: string } | undefined;
    const onProxyConnect = (connect: { statusCode: number; statusText: string }): void => {
      if (connect.statusCode !== 200) refusal = connect;
    };
    req.once("proxyConnect", onProxyConnect);
    try {
      const socket = await super.connect(req, (this.secureContext ? { ...target, secureContext: this.secureContext } : target) as ConnectOptions);
      if (!refusal) return socket;
      // HttpsProxyAgent would hand the proxy's own answer (407, 502 ...) to the SDK as if the vault had sent it.
      socket.destroy();
      throw new Error(`the proxy ${this.where} refused a tunnel to ${options.host}:${options.port}: ${refusal.statusCode} ${refusal.statusText}`.trimEnd());
    } finally {
      req.off("proxyConnect", onProxyConnect);
    }
  }
}
