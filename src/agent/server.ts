// The agent's main thread: it listens on the Unix socket, admits only its own user (SO_PEERCRED) or the users a
// system agent lists, reads each connection's hello, and hands the connection to the worker thread of its context
// (context.ts). It exits after an idle period, and on SIGTERM once the calls in flight are answered.
import { chmodSync, closeSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import path from "node:path";
import { MessageChannel, Worker } from "node:worker_threads";
import { log } from "../log/log.ts";
import { Reader } from "../protocol/codec.ts";
import { replyWriter, sealReply } from "../protocol/frames.ts";
import { FunctionId } from "../protocol/functions.ts";
import { CKR } from "../pkcs11/constants.ts";
import { loadConfig } from "../config/load.ts";
import { bridgeSocket } from "./bridge.ts";
import { ContextIdentities, contextIdentity, type ContextIdentity } from "./context-key.ts";
import { ContextConnections, type ContextMessage, type ContextReport, type ContextWorkerData } from "./context.ts";
import { AGENT_PID_NAME } from "./paths.ts";
import { peerCredentials } from "./peercred.ts";

export const DEFAULT_IDLE_SECONDS = 600;
/** A hello is a few kilobytes of environment; anything bigger is not one. */
const MAX_HELLO_BYTES = 1024 * 1024;
const HELLO_DEADLINE_MS = 5000;
const DRAIN_DEADLINE_MS = 30_000;

export interface AgentOptions {
  socketPath: string;
  /** 0: never exit for idleness. */
  idleSeconds: number;
  /** A system agent also admits these users and groups (nginx workers as www-data, say). */
  allowUids: Set<number>;
  allowGids: Set<number>;
  /** Written "ready\n" and closed once the socket listens (the detaching launcher waits for it). */
  readyFd?: number;
  /** Seconds between re-reads of a cached key (cache.ts). */
  refreshSeconds?: number;
}

interface Context {
  identity: ContextIdentity;
  worker: Worker;
  connections: Set<number>;
  idleTimer?: NodeJS.Timeout;
  drained?: () => void;
}

interface Hello {
  id: number;
  env: Record<string, string>;
  cwd: string;
}

function parseHello(frame: Buffer): Hello {
  const reader = new Reader(frame.subarray(8));
  const env: Record<string, string> = {};
  for (let n = reader.u32(); n > 0; n--) {
    const entry = reader.bytes().toString("utf8");
    const equals = entry.indexOf("=");
    if (equals > 0) env[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  const cwd = reader.bytes().toString("utf8");
  reader.end();
  return { id: frame.readUInt32LE(0), env, cwd: cwd || "/" };
}

/** The folder of a per-user socket is created 0700 and must stay so: anyone who can reach the socket can sign. */
function prepareFolder(socketPath: string, shared: boolean): void {
  const folder = path.dirname(socketPath);
  mkdirSync(folder, { recursive: true, mode: shared ? 0o755 : 0o700 });
  const stats = lstatSync(folder);
  if (!stats.isDirectory()) throw new Error(`${folder} is not a folder`);
  if (stats.uid !== process.getuid!()) throw new Error(`${folder} belongs to uid ${stats.uid}, not to this user`);
  if (!shared && (stats.mode & 0o077) !== 0) throw new Error(`${folder} is open to other users (mode ${(stats.mode & 0o777).toString(8)}); it must be 0700`);
}

/** True when an agent already answers on socketPath. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socketPath);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

function listen(server: Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

export async function runAgent(options: AgentOptions): Promise<number> {
  const shared = options.allowUids.size > 0 || options.allowGids.size > 0;
  prepareFolder(options.socketPath, shared);
  const contexts = new Map<string, Context>();
  const refusals = new Map<string, boolean>();
  const identities = new ContextIdentities();
  let nextConnection = 1;
  let connectionCount = 0;
  let idleTimer: NodeJS.Timeout | undefined;
  let stopping = false;
  const idleMs = options.idleSeconds * 1000;
  const workerFile = path.join(__dirname, "helper.cjs");
  // The context of the environment the agent itself runs with (that of the process that started it, or of its unit).
  const home = {
    identity: contextIdentity(Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined)), process.cwd()),
    connections: new ContextConnections(options.refreshSeconds ? options.refreshSeconds * 1000 : undefined),
  };

  const server = createServer((socket) => admit(socket));
  if (await answers(options.socketPath)) {
    log.info(`an agent already listens on ${options.socketPath}`);
    signalReady(options.readyFd);
    return 0;
  }
  // Listen on a name of our own and rename it into place: the rename replaces a socket left by an agent that died
  // in one step, and the name libuv unlinks when the server closes is never the one a newer agent may own by then.
  const ownName = `${options.socketPath}.${process.pid}`;
  rmSync(ownName, { force: true });
  await listen(server, ownName);
  chmodSync(ownName, shared ? 0o666 : 0o600);
  renameSync(ownName, options.socketPath);
  const socketInode = statSync(options.socketPath).ino;
  // For `kill $(cat agent.pid)`, systemd's PIDFile= and the tests; removed with the socket.
  const pidFile = path.join(path.dirname(options.socketPath), AGENT_PID_NAME);
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  log.info(`agent ${process.pid} listening on ${options.socketPath} (exits after ${options.idleSeconds} s without connections)`);
  signalReady(options.readyFd);
  armIdle();

  let resolveExit: (code: number) => void = () => undefined;
  const exited = new Promise<number>((resolve) => (resolveExit = resolve));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  return exited;

  function armIdle(): void {
    clearTimeout(idleTimer);
    if (connectionCount === 0 && !stopping && idleMs > 0) idleTimer = setTimeout(() => void stop(`idle for ${options.idleSeconds} s`), idleMs);
  }

  async function stop(why: string): Promise<void> {
    if (stopping) return;
    stopping = true;
    clearTimeout(idleTimer);
    log.info(`agent ${process.pid} stopping (${why}); answering the calls in flight first`);
    server.close();
    removeSocket();
    const drains: Array<Promise<void>> = [new Promise<void>((resolve) => home.connections.drain(resolve))];
    drains.push(...[...contexts.values()].map(
      (context) =>
        new Promise<void>((resolve) => {
          context.drained = resolve;
          context.worker.postMessage({ type: "drain" } satisfies ContextMessage);
        }),
    ));
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, DRAIN_DEADLINE_MS).unref());
    await Promise.race([Promise.all(drains), deadline]);
    await Promise.all([...contexts.values()].map((context) => context.worker.terminate()));
    resolveExit(0);
  }

  /** Only our own socket and pid file: a newer agent may have replaced them. */
  function removeSocket(): void {
    try {
      if (statSync(options.socketPath).ino === socketInode) unlinkSync(options.socketPath);
    } catch {
      // Already gone.
    }
    try {
      if (readFileSync(pidFile, "utf8").trim() === String(process.pid)) unlinkSync(pidFile);
    } catch {
      // Already gone.
    }
  }

  function admit(socket: Socket): void {
    let peer;
    try {
      peer = peerCredentials(socket);
    } catch (error) {
      log.error(`cannot read the peer of a connection: ${(error as Error).message}; closing it`);
      socket.destroy();
      return;
    }
    if (peer.uid !== process.getuid!() && !options.allowUids.has(peer.uid) && !options.allowGids.has(peer.gid)) {
      log.error(`refused a connection from uid ${peer.uid} (pid ${peer.pid}): only uid ${process.getuid!()}${shared ? " and the listed users and groups" : ""} may use this agent`);
      socket.destroy();
      return;
    }
    if (stopping) {
      socket.destroy();
      return;
    }
    connectionCount++;
    clearTimeout(idleTimer);
    const id = nextConnection++;
    let counted = true;
    const forget = (): void => {
      if (!counted) return;
      counted = false;
      connectionCount--;
      armIdle();
    };
    socket.once("close", forget);
    // Another user's process (admitted by a system agent's lists) never chooses the files this agent reads for it:
    // it is served with the agent's own environment and config.
    const ownUser = peer.uid === process.getuid!();
    readHello(socket, peer.pid)
      .then(({ hello, leftover }) => route(socket, id, ownUser ? hello : { ...hello, env: { ...process.env } as Record<string, string>, cwd: process.cwd() }, leftover, forget))
      .catch((error: unknown) => {
        log.error(`connection from pid ${peer.pid}: ${(error as Error).message}; closing it`);
        socket.destroy();
      });
  }

  function route(socket: Socket, id: number, hello: Hello, leftover: Buffer, forget: () => void): void {
    const identity = identities.identify(hello.env, hello.cwd);
    if (refusesAgent(identity)) {
      socket.end(sealReply(replyWriter(), hello.id, CKR.FUNCTION_NOT_SUPPORTED));
      return;
    }
    if (identity.key === home.identity.key) {
      // The agent's own environment: served on this thread, with no hop to a worker and no worker to pay for.
      socket.write(sealReply(replyWriter(), hello.id, CKR.OK));
      if (leftover.length > 0) socket.unshift(leftover);
      home.connections.add(id, socket, forget);
      socket.resume();
      return;
    }
    const context = contexts.get(identity.key) ?? startContext(identity);
    clearTimeout(context.idleTimer);
    context.connections.add(id);
    socket.write(sealReply(replyWriter(), hello.id, CKR.OK));
    const { port1, port2 } = new MessageChannel();
    context.worker.postMessage({ type: "connection", id, port: port2 } satisfies ContextMessage, [port2]);
    const owner = context;
    bridgeSocket(socket, port1, leftover, () => {
      owner.connections.delete(id);
      forget();
      if (owner.connections.size === 0 && idleMs > 0) owner.idleTimer = setTimeout(() => endContext(owner), idleMs);
    });
  }

  /** Asked once per context: whether its config says `"agent": false`. */
  function refusesAgent(identity: ContextIdentity): boolean {
    let refuses = refusals.get(identity.key);
    if (refuses === undefined) {
      refuses = configRefusesAgent(identity);
      if (refusals.size >= 1000) refusals.clear();
      refusals.set(identity.key, refuses);
    }
    return refuses;
  }

  function startContext(identity: ContextIdentity): Context {
    const workerData: ContextWorkerData = { role: "agent-context", key: identity.key, refreshMs: options.refreshSeconds ? options.refreshSeconds * 1000 : undefined };
    const worker = new Worker(workerFile, { workerData, env: identity.env });
    const context: Context = { identity, worker, connections: new Set() };
    contexts.set(identity.key, context);
    worker.on("message", (report: ContextReport) => {
      if (report.type === "drained") context.drained?.();
    });
    worker.on("error", (error) => log.error(`agent context ${identity.key.slice(0, 12)} failed: ${error.stack ?? error.message}`));
    worker.on("exit", () => {
      if (contexts.get(identity.key) === context) contexts.delete(identity.key);
      context.drained?.();
    });
    log.debug(`new context ${identity.key.slice(0, 12)} for ${identity.configFile ?? "no config file"}`);
    return context;
  }

  function endContext(context: Context): void {
    if (context.connections.size > 0) return;
    contexts.delete(context.identity.key);
    log.debug(`context ${context.identity.key.slice(0, 12)} idle for ${options.idleSeconds} s; ending it`);
    void context.worker.terminate();
  }
}

/** `"agent": false` in the context's config: its processes use private helpers (the environment decides first). */
function configRefusesAgent(identity: ContextIdentity): boolean {
  if (identity.env.AZURE_KEYVAULT_PKCS11_AGENT !== undefined) return false;
  try {
    return loadConfig(identity.env).agent === false;
  } catch {
    return false;
  }
}

function signalReady(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    writeSync(fd, "ready\n");
    closeSync(fd);
  } catch {
    // The launcher went away; nobody is waiting.
  }
}

/** The first frame of a connection, which must be the hello; the bytes after it belong to the application. */
function readHello(socket: Socket, pid: number): Promise<{ hello: Hello; leftover: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`no hello within ${HELLO_DEADLINE_MS} ms`)), HELLO_DEADLINE_MS);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 4) return;
      const length = buffered.readUInt32LE(0);
      if (length > MAX_HELLO_BYTES || length < 8) return fail(new Error(`a first frame of ${length} bytes is no hello`));
      if (buffered.length < 4 + length) return;
      const frame = buffered.subarray(4, 4 + length);
      if (frame.readUInt32LE(4) !== FunctionId.AgentHello) return fail(new Error(`the first frame is function ${frame.readUInt32LE(4)}, not the hello`));
      cleanup();
      try {
        resolve({ hello: parseHello(frame), leftover: Buffer.from(buffered.subarray(4 + length)) });
      } catch (error) {
        reject(new Error(`malformed hello from pid ${pid}: ${(error as Error).message}`));
      }
    };
    const onEnd = (): void => fail(new Error("closed before its hello"));
    function cleanup(): void {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.pause();
    }
    function fail(error: Error): void {
      cleanup();
      reject(error);
    }
    socket.on("data", onData);
    socket.on("end", onEnd);
  });
}
