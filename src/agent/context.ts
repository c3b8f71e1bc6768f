// One agent context, in a worker thread of its own whose process.env is the context's environment: the config,
// the credential and its tokens, the HTTPS connections and the key cache that its applications share. Each
// connection is its own application (its own Pkcs11Module: sessions, login state, operations); C_Finalize ends only
// that connection.
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { loadConfig } from "../config/load.ts";
import type { ModuleConfig } from "../config/types.ts";
import { Pkcs11Module, remoteDeadlineMs, type VaultSource } from "../helper/module.ts";
import { serve } from "../helper/serve.ts";
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

export function runContextWorker(): void {
  const data = workerData as ContextWorkerData;
  const port = parentPort!;
  const source = new SharedVaultSource(data.refreshMs);
  const connections = new Map<number, { inFlight: () => number; close: () => void }>();
  let draining = false;

  const report = (message: ContextReport): void => port.postMessage(message);
  const drainedIfIdle = (): void => {
    if (!draining) return;
    for (const [id, connection] of connections) {
      if (connection.inFlight() === 0) {
        connection.close();
        connections.delete(id);
      }
    }
    if (connections.size === 0) report({ type: "drained" });
  };

  port.on("message", (message: ContextMessage) => {
    if (message.type === "drain") {
      draining = true;
      drainedIfIdle();
      return;
    }
    const stream = new PortDuplex(message.port);
    const served = serve(stream, new Pkcs11Module(source), {
      forwardLogs: true,
      exit: () => {
        stream.destroy();
        connections.delete(message.id);
        report({ type: "closed", id: message.id });
        drainedIfIdle();
      },
      onIdle: drainedIfIdle,
    });
    connections.set(message.id, served);
  });
  log.debug(`agent context ${data.key.slice(0, 12)} started`);
}
