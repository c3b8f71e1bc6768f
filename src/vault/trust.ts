// TLS trust for vault and token endpoints: the system store, NODE_EXTRA_CA_CERTS and the config's ca_file(s).
// Node's `ca` option REPLACES its default store, and tls.rootCertificates lacks NODE_EXTRA_CA_CERTS, so when ca
// files are configured the list is rebuilt explicitly from all three; without ca files, Node's default (which
// already includes NODE_EXTRA_CA_CERTS) is left alone.
import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import { createSecureContext, rootCertificates } from "node:tls";
import { log } from "../log/log.ts";

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

/** One keep-alive agent per distinct trust set, shared by every client that needs that trust. */
export class AgentPool {
  private readonly agents = new Map<string, Agent>();

  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly explicit = false,
  ) {}

  get(caFiles: readonly string[]): Agent {
    const files = [...new Set(caFiles)].sort();
    const key = files.join("\n");
    let agent = this.agents.get(key);
    if (!agent) {
      const ca = buildCaList(files, this.env, this.explicit);
      // keepAlive: a TLS handshake costs far more than a signature's overhead budget. No socket cap: 16
      // concurrent signers must each get a connection rather than queue behind each other.
      // The trust list goes in as a prebuilt SecureContext, not as `ca`: https.Agent folds `ca` into the pool key
      // it computes for every request, and concatenating ~150 PEMs each time cost milliseconds per signature.
      agent = new Agent({
        keepAlive: true,
        keepAliveMsecs: 30_000,
        maxSockets: Infinity,
        maxFreeSockets: 256,
        scheduling: "lifo",
        ...(ca ? { secureContext: createSecureContext({ ca }) } : {}),
      });
      this.agents.set(key, agent);
      if (files.length > 0) log.debug(`TLS: trusting the system store, NODE_EXTRA_CA_CERTS and ${files.join(", ")}`);
    }
    return agent;
  }

  destroy(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }
}
