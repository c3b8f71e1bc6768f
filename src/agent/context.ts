// One agent context: the config, the credential and its tokens, the HTTPS connections and the key cache that its
// applications share. Each connection is its own application (its own Pkcs11Module: sessions, login state,
// operations); C_Finalize ends only that connection. The context of the agent's own environment runs on the agent's
// main thread; every other context runs in a worker thread of its own whose process.env is that context's
// environment, because the Azure SDK reads credentials and proxies from process.env.
import type { Duplex } from "node:stream";
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { loadConfig } from "../config/load.ts";
import type { ModuleConfig } from "../config/types.ts";
import { Pkcs11Module, remoteDeadlineMs, type VaultSource } from "../helper/module.ts";
import { serve, type ServedLink } from "../helper/serve.ts";
import { log } from "../log/log.ts";
import { createVaultBackend } from "../vault/index.ts";
import type { VaultBackend } from "../vault/types.ts";
import { PortDuplex } from "./bridge.ts";
import { CachingVaultBackend, DEFAULT_REFRESH_MS } from "./cache.ts";

export interface ContextWorkerData {
  role: "agent-context";
  key: string;
  refreshMs?: number;
}

/** Messages from the agent's main thread. */
export type ContextMessage = { type: "connection"; id: number; port: MessagePort } | { type: "drain" };
/** Messages to it. */
export type ContextReport = { type: "closed"; id: number } | { type: "drained" };

/** The context's shared config and backend, loaded by its first application. */
export class SharedVaultSource implements VaultSource {
  private opened: { config: ModuleConfig; backend: VaultBackend } | undefined;

  constructor(private readonly refreshMs = DEFAULT_REFRESH_MS) {}

  open(callTimeoutMs: number | undefined): { config: ModuleConfig; backend: VaultBackend } {
    if (this.opened) return this.opened;
    // A bad config throws here for every application, until the file is fixed (which makes a new context).
    let config = loadConfig(process.env);
    config = { ...config, timeoutMs: remoteDeadlineMs(config.timeoutMs, callTimeoutMs) };
    const backend = createVaultBackend(config, { env: process.env, explicitTrust: true });
    this.opened = { config, backend: new CachingVaultBackend(backend, this.refreshMs) };
    return this.opened;
  }
}

/** The applications of one context, wherever it runs. */
export class ContextConnections {
  private readonly source: SharedVaultSource;
  private readonly links = new Map<number, ServedLink>();
  private whenDrained: (() => void) | undefined;

  constructor(refreshMs?: number) {
    this.source = new SharedVaultSource(refreshMs);
  }

  get size(): number {
    return this.links.size;
  }

  /** Serves one host's connection; `closed` runs once it ends, however it ends. */
  add(id: number, stream: Duplex, closed: () => void): void {
    const module = new Pkcs11Module(this.source);
    const link = serve(stream, module, {
      forwardLogs: true,
      exit: () => {
        module.discard();
        stream.destroy();
        this.links.delete(id);
        closed();
        this.closeIdle();
      },
      onIdle: () => this.closeIdle(),
    });
    this.links.set(id, link);
  }

  /** SIGTERM: each connection is closed once its calls in flight are answered; `drained` runs when none is left. */
  drain(drained: () => void): void {
    this.whenDrained = drained;
    this.closeIdle();
  }

  private closeIdle(): void {
    if (!this.whenDrained) return;
    for (const link of [...this.links.values()]) if (link.inFlight() === 0) link.close();
    // A close above may have come back here through `exit` and reported already.
    const drained = this.whenDrained;
    if (drained && this.links.size === 0) {
      this.whenDrained = undefined;
      drained();
    }
  }
}

export function runContextWorker(): void {
  const data = workerData as ContextWorkerData;
  const port = parentPort!;
  const connections = new ContextConnections(data.refreshMs);
  const report = (message: ContextReport): void => port.postMessage(message);
  port.on("message", (message: ContextMessage) => {
    if (message.type === "drain") connections.drain(() => report({ type: "drained" }));
    else connections.add(message.id, new PortDuplex(message.port), () => report({ type: "closed", id: message.id }));
  });
  log.debug(`agent context ${data.key.slice(0, 12)} started`);
}
