// Shared fixture of the agent tests: an emulated vault (test/module/harness.ts, public keys fetched from it over
// HTTPS), a private runtime folder per test so that agents never collide, pkcs11-tool as the client, and ways to
// find, count and stop the agents a test started. Every signature is verified with node:crypto against the
// vault's JWK.
import { verify } from "node:crypto";
import { once } from "node:events";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { isContextVariable } from "../../src/agent/context-key.ts";
import { modulePath, repoRoot, requestFrame, requestsSince, startModuleFixture, type FixtureKey, type ModuleFixture } from "../module/harness.ts";
import { describe, run, startDaemon, type Daemon, type RunResult } from "../clients/process.ts";

export { describe, modulePath };
export type { ModuleFixture };

const helperBundle = path.join(repoRoot, "build", "helper.cjs");
/** The one line the shim writes when it cannot use the agent (the contract in docs: exactly this form). */
export const FALLBACK_LINE = /^AZURE_KEYVAULT: cannot use the agent at (\S+): .*; using a private helper$/m;

/** An XDG_RUNTIME_DIR of one test, and where the agent of its default socket keeps its files. */
export interface Runtime {
  dir: string;
  agentDir: string;
  socketPath: string;
  pidFile: string;
  logFile: string;
  remove(): void;
}

export function makeRuntime(): Runtime {
  const dir = mkdtempSync(path.join(tmpdir(), "akv-agent-run-"));
  chmodSync(dir, 0o700);
  const agentDir = path.join(dir, "azure-keyvault-pkcs11");
  return {
    dir,
    agentDir,
    socketPath: path.join(agentDir, "agent.sock"),
    pidFile: path.join(agentDir, "agent.pid"),
    logFile: path.join(agentDir, "agent.log"),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A fresh runtime folder whose agents are stopped and which is removed when the test ends. */
export function runtimeFor(t: { teardown(fn: () => Promise<void> | void): void }): Runtime {
  const runtime = makeRuntime();
  t.teardown(async () => {
    await stopAgents(runtime);
    runtime.remove();
  });
  return runtime;
}

/** The vault: an emulator, a config.json naming its keys as tokens (label = key name), the keys' JWKs. */
export function startVault(keys: string): Promise<ModuleFixture> {
  // No C_Initialize in this process: the hosts are other processes (or the test initialises itself).
  return startModuleFixture({ keys, skipInitialize: true });
}

/**
 * The environment of a client process of `vault` whose agent lives in `runtime` (AGENT unset: on by default);
 * without a runtime, no XDG_RUNTIME_DIR.
 */
export function clientEnv(vault: ModuleFixture, runtime: Runtime | undefined, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: vault.dir,
    LC_ALL: "C",
    ...(runtime ? { XDG_RUNTIME_DIR: runtime.dir } : {}),
    AZURE_KEYVAULT_PKCS11_CONFIG: vault.configPath,
    IDENTITY_ENDPOINT: vault.emulator.identityEndpoint,
    IDENTITY_HEADER: vault.emulator.identityHeader,
    NODE_EXTRA_CA_CERTS: vault.emulator.caFile,
  };
  for (const [name, value] of Object.entries(extra)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return env;
}

export interface Seen {
  requests: Record<string, number>;
  tokens: number;
}

/** What `action` made the emulator `on` do: data-plane requests by operation, and tokens issued. */
export async function seenDuring<T>(on: ModuleFixture, action: () => Promise<T>): Promise<{ value: T; seen: Seen }> {
  const requests = await on.emulator.requestCounts();
  const tokens = await on.emulator.tokensIssued();
  const value = await action();
  return { value, seen: { requests: requestsSince(requests, await on.emulator.requestCounts()), tokens: (await on.emulator.tokensIssued()) - tokens } };
}

let serial = 0;

export interface ToolSign {
  result: RunResult;
  message: Buffer;
  signature: Buffer | undefined;
  /** Verified against the vault's public key with node:crypto. */
  verified: boolean;
}

/** `pkcs11-tool --sign -m ECDSA-SHA256` with `key` (an EC key of the vault), verified against the vault's JWK. */
export async function toolSign(key: FixtureKey, env: NodeJS.ProcessEnv, options: { cwd?: string; tokenLabel?: string; timeoutMs?: number } = {}): Promise<ToolSign> {
  const work = mkdtempSync(path.join(tmpdir(), "akv-agent-sign-"));
  try {
    const message = Buffer.from(`agent test message ${process.pid}.${++serial}.${Date.now()}`);
    const input = path.join(work, "in");
    const output = path.join(work, "sig");
    writeFileSync(input, message);
    const result = await run(
      "pkcs11-tool",
      ["--module", modulePath, "--token-label", options.tokenLabel ?? key.label, "--sign", "-m", "ECDSA-SHA256", "--label", key.name, "-i", input, "-o", output],
      { env, cwd: options.cwd, timeoutMs: options.timeoutMs ?? 60_000 },
    );
    const signature = existsSync(output) ? readFileSync(output) : undefined;
    const verified = signature !== undefined && signature.length > 0 && verifyEcdsa(key, message, signature);
    return { result, message, signature, verified };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** ECDSA-SHA256 in PKCS#11's raw r||s form, against the vault's key. */
export function verifyEcdsa(key: FixtureKey, message: Buffer, signature: Buffer): boolean {
  return verify("sha256", message, { key: key.publicKey, dsaEncoding: "ieee-p1363" }, signature);
}

export function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** The pid agent.pid names, if any. */
export function agentPid(runtime: Pick<Runtime, "pidFile">): number | undefined {
  const pid = Number(readText(runtime.pidFile).trim());
  return Number.isInteger(pid) && pid > 1 ? pid : undefined;
}

/** Pids of the agents that ever listened on this socket, from their "listening on" lines in agent.log. */
export function listeningPids(logText: string, socketPath: string): number[] {
  const pids: number[] = [];
  for (const match of logText.matchAll(/agent (\d+) listening on (\S+)/g)) if (match[2] === socketPath) pids.push(Number(match[1]));
  return pids;
}

function cmdline(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return undefined;
  }
}

/** True while `pid` is an agent process (not a zombie) serving `socketPath`; guards against reused pids. */
export function isAgentProcess(pid: number, socketPath: string): boolean {
  const args = cmdline(pid);
  if (!args || !args.some((arg) => arg.endsWith("helper.cjs")) || !args.includes("agent") || !args.includes(socketPath)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Every live process whose command line is an agent (not its --detach launcher) on `socketPath`. */
export function agentProcesses(socketPath: string): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => isAgentProcess(pid, socketPath) && !cmdline(pid)!.includes("--detach"));
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 25 ms, at most `timeoutMs`: a hang detector, not a timing assertion. */
export async function eventually(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
}

/** Stops every agent this runtime folder's socket has had (agent.pid and agent.log), and waits until they are gone. */
export async function stopAgents(runtime: Runtime, socketPath = runtime.socketPath): Promise<void> {
  const logText = readText(path.join(path.dirname(socketPath), "agent.log"));
  const pidFile = path.join(path.dirname(socketPath), "agent.pid");
  const candidates = new Set([...listeningPids(logText, socketPath), ...[agentPid({ pidFile })].filter((pid) => pid !== undefined)]);
  const alive = [...candidates].filter((pid) => pid > 1 && isAgentProcess(pid, socketPath));
  for (const pid of alive) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // Gone meanwhile.
    }
  }
  await eventually(() => alive.every((pid) => !isAgentProcess(pid, socketPath)), 35_000);
}

/**
 * An agent in the foreground on `socketPath`, started by the test (its exit status and output are the test's);
 * resolves once it listens. Node reads NODE_EXTRA_CA_CERTS at start-up only, so the agent gets the vault's CA in
 * its own environment.
 */
export async function foregroundAgent(socketPath: string, args: string[], vault: ModuleFixture, extraEnv: Record<string, string> = {}): Promise<Daemon> {
  const daemon = startDaemon(process.execPath, [helperBundle, "agent", "--socket", socketPath, ...args], {
    env: { PATH: process.env.PATH, HOME: path.dirname(socketPath), NODE_EXTRA_CA_CERTS: vault.emulator.caFile, ...extraEnv },
  });
  const up = await eventually(() => daemon.output().includes(`listening on ${socketPath}`) || daemon.child.exitCode !== null, 30_000);
  if (!up || daemon.child.exitCode !== null) {
    await daemon.stop();
    throw new Error(`the agent did not start:\n${daemon.output()}`);
  }
  return daemon;
}

/** Until the daemon has exited; false after `ms` (hang detector). */
export function exitedWithin(daemon: Daemon, ms: number): Promise<boolean> {
  return eventually(() => daemon.child.exitCode !== null || daemon.child.signalCode !== null, ms);
}

// ---- The agent protocol by hand (docs/protocol.md), for connections no shim would make ----------------------

/** A frame as the shim sends it: u32 length, u32 request id, u32 function id, payload. */
export function frame(id: number, functionId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return requestFrame(id, functionId, payload);
}

function bytes(value: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32LE(value.length);
  return Buffer.concat([length, value]);
}

/** The shim's hello (function 257): the context variables of `env`, then the working folder. */
export function hello(env: NodeJS.ProcessEnv): Buffer {
  const entries = Object.entries(env).filter(([name, value]) => isContextVariable(name) && value !== undefined);
  const count = Buffer.alloc(4);
  count.writeUInt32LE(entries.length);
  return frame(1, 257, Buffer.concat([count, ...entries.map(([name, value]) => bytes(Buffer.from(`${name}=${value}`))), bytes(Buffer.from("/"))]));
}

export interface RawConnection {
  socket: net.Socket;
  /** Replies received so far, as [request id, rv]. */
  replies: Array<[number, bigint]>;
  closed: Promise<boolean>;
  isClosed(): boolean;
}

export async function connectRaw(socketPath: string): Promise<RawConnection> {
  const socket = net.connect(socketPath);
  socket.on("error", () => {
    // The agent may reset a connection it drops; 'close' follows.
  });
  await once(socket, "connect");
  const replies: Array<[number, bigint]> = [];
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32LE(0)) {
      const length = buffered.readUInt32LE(0);
      replies.push([buffered.readUInt32LE(4), buffered.readBigUInt64LE(8)]);
      buffered = buffered.subarray(4 + length);
    }
  });
  let closed = false;
  const closedPromise = new Promise<boolean>((resolve) => socket.once("close", () => resolve((closed = true))));
  return { socket, replies, closed: closedPromise, isClosed: () => closed };
}

/** Resolves true once the agent closed the connection, false when it is still open after `ms` (hang detector). */
export function closedWithin(connection: RawConnection, ms: number): Promise<boolean> {
  return Promise.race([connection.closed, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref())]);
}
