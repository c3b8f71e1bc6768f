// Running real client programs from the tests: every child gets a deadline and is killed with its whole process
// group when it passes, so a client that waits for a PIN on a terminal or a server that never answers fails the
// test instead of hanging it. Children run in their own session (no controlling terminal), which makes programs
// that insist on reading /dev/tty fail at once.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import net from "node:net";

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to the child's stdin, which is then closed. Default: an empty stdin. */
  input?: string | Buffer;
  /** Default 60 s. */
  timeoutMs?: number;
}

export interface RunResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

const DEFAULT_TIMEOUT_MS = 60_000;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  }
}

export async function run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const command = [file, ...args].map((part) => (/[\s;"'$]/.test(part) ? JSON.stringify(part) : part)).join(" ");
  const child = spawn(file, args, {
    env: options.env,
    cwd: options.cwd,
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
  child.stdin.on("error", () => {
    // The child may exit before reading its input; its exit status tells the story.
  });
  child.stdin.end(options.input ?? "");
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, "SIGKILL");
  }, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  let spawnError: Error | undefined;
  child.on("error", (error) => {
    spawnError = error;
  });
  const [code, signal] = (await once(child, "close")) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  const stdoutBytes = Buffer.concat(stdout);
  return {
    command,
    code: spawnError ? -1 : code,
    signal,
    timedOut,
    stdout: stdoutBytes.toString("utf8"),
    stderr: Buffer.concat(stderr).toString("utf8") + (spawnError ? `\nspawn failed: ${spawnError.message}` : ""),
    stdoutBytes,
  };
}

/** A one-line-per-field account of a finished command, for assertion messages. */
export function describe(result: RunResult): string {
  const status = result.timedOut ? "timed out (killed)" : result.signal ? `killed by ${result.signal}` : `exit ${result.code}`;
  const clip = (text: string) => (text.length > 4000 ? `${text.slice(0, 2000)}\n…\n${text.slice(-2000)}` : text);
  return `$ ${result.command}\n${status}\n--- stdout ---\n${clip(result.stdout)}\n--- stderr ---\n${clip(result.stderr)}`;
}

export interface Daemon {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** Starts a long-running program (nginx, ssh-agent). stop() sends SIGTERM to its group, then SIGKILL after 5 s. */
export function startDaemon(file: string, args: readonly string[], options: { env: NodeJS.ProcessEnv; cwd?: string }): Daemon {
  const child = spawn(file, args, { env: options.env, cwd: options.cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const chunks: Buffer[] = [];
  child.stdout?.on("data", (chunk: Buffer) => chunks.push(chunk));
  child.stderr?.on("data", (chunk: Buffer) => chunks.push(chunk));
  child.on("error", (error) => chunks.push(Buffer.from(`\nspawn failed: ${error.message}\n`)));
  const exited = once(child, "close").catch(() => undefined);
  return {
    child,
    output: () => Buffer.concat(chunks).toString("utf8"),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      killGroup(child, "SIGTERM");
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no TCP address for the probe socket");
  return address.port;
}

export async function waitFor(condition: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
