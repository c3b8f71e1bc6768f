// Shared fixture of the agent tests: an emulated vault (test/module/harness.ts, public keys fetched from it over
// HTTPS), a private runtime folder per test so that agents never collide, pkcs11-tool as the client, and ways to
// find, count and stop the agents a test started. Every signature is verified with node:crypto against the
// vault's JWK.
import { verify } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { modulePath, repoRoot, startModuleFixture, type FixtureKey, type ModuleFixture } from "../module/harness.ts";
import { describe, run, type RunResult } from "../clients/process.ts";

export { describe, modulePath, repoRoot };
export type { FixtureKey, ModuleFixture, RunResult };

export const helperBundle = path.join(repoRoot, "build", "helper.cjs");
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

export async function sleep(ms: number): Promise<void> {
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
