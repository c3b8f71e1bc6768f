// TLS trust for vault and token endpoints: the system store, NODE_EXTRA_CA_CERTS and the config's ca_file(s).
// Node's `ca` option REPLACES its default store, and tls.rootCertificates lacks NODE_EXTRA_CA_CERTS, so when ca
// files are configured the list is rebuilt explicitly from all three; without ca files, Node's default (which
// already includes NODE_EXTRA_CA_CERTS) is left alone.
import { readFileSync } from "node:fs";
import type { Agent as HttpAgent } from "node:http";
import { Agent } from "node:https";
import { createSecureContext, rootCertificates, type SecureContext } from "node:tls";
import { log } from "../log/log.ts";
import { TunnelAgent } from "./proxy.ts";

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export function pemCertificates(file: string): string[] {
  return readFileSync(file, "utf8").match(PEM_BLOCK) ?? [];
}

/**
 * The trust list to pass as `ca`, or undefined to keep Node's default store. `explicit` always builds the list: an
 * agent context must trust its own NODE_EXTRA_CA_CERTS, which Node read once, for the agent process, at its start.
 */
export function buildCaList(caFiles: readonly string[], env: NodeJS.ProcessEnv = process.env, explicit = false): string[] | undefined {
  if (caFiles.length === 0 && !explicit) return undefined;
  const list = [...rootCertificates];
  const extra = env.NODE_EXTRA_CA_CERTS;
  if (extra) {
    try {
      list.push(...pemCertificates(extra));
    } catch (error) {
      // Node itself only warns about an unreadable NODE_EXTRA_CA_CERTS; do the same.
      log.warn(`NODE_EXTRA_CA_CERTS: cannot read ${extra}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  for (const file of caFiles) list.push(...pemCertificates(file));
  return list;
}

// keepAlive: a TLS handshake costs far more than a signature's overhead budget. No socket cap: 16 concurrent
// signers must each get a connection rather than queue behind each other.
const KEEP_ALIVE = { keepAlive: true, keepAliveMsecs: 30_000, maxSockets: Infinity, maxFreeSockets: 256, scheduling: "lifo" } as const;

/** One keep-alive agent per distinct trust set and proxy, shared by every client that needs that trust and proxy. */
export class AgentPool {
  private readonly agents = new Map<string, HttpAgent>();
  private readonly contexts = new Map<string, SecureContext | undefined>();

  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly explicit = false,
  ) {}

  /** `proxy`: tunnel through it (see proxy.ts) with the same trust and keep-alive; without it, connect directly. */
  get(caFiles: readonly string[], proxy?: URL): HttpAgent {
    const files = [...new Set(caFiles)].sort();
    const trustKey = files.join("\n");
    // NUL cannot occur in a path, so no file list collides with a proxy.
    const key = proxy ? `${proxy.href}\0${trustKey}` : trustKey;
    let agent = this.agents.get(key);
    if (!agent) {
      const secureContext = this.secureContext(files, trustKey);
      agent = proxy ? new TunnelAgent(proxy, secureContext, KEEP_ALIVE) : new Agent({ ...KEEP_ALIVE, ...(secureContext ? { secureContext } : {}) });
      this.agents.set(key, agent);
    }
    return agent;
  }

  destroy(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    this.contexts.clear();
  }

  /**
   * The trust list as a prebuilt SecureContext, not as `ca`: https.Agent folds `ca` into the pool key it computes
   * for every request, and concatenating ~150 PEMs each time cost milliseconds per signature.
   */
  private secureContext(files: string[], trustKey: string): SecureContext | undefined {
    if (this.contexts.has(trustKey)) return this.contexts.get(trustKey);
    const ca = buildCaList(files, this.env, this.explicit);
    const context = ca ? createSecureContext({ ca }) : undefined;
    this.contexts.set(trustKey, context);
    if (files.length > 0) log.debug(`TLS: trusting the system store, NODE_EXTRA_CA_CERTS and ${files.join(", ")}`);
    return context;
  }
}
