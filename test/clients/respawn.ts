// Shared by the tests that kill the module's helper under a live host (nginx, SunPKCS11, NSS): the process table
// read with `ps`, the helpers (`node …/build/helper.cjs`, a child of the process that called C_Initialize) of given
// processes, and a long-lived host driven one line at a time over its stdin and stdout.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { readdirSync } from "node:fs";
import { run } from "./process.ts";

/** The respawn tests are about the host's own helper, so their hosts never use the shared agent (docs/agent.md). */
export const PRIVATE_HELPER = { AZURE_KEYVAULT_PKCS11_AGENT: "0" } as const;

export interface ProcessEntry {
  pid: number;
  ppid: number;
  /** ps STAT: "Z" first for a zombie (<defunct>). */
  stat: string;
  args: string;
}

/** Every process, from `ps` (the same table an operator looks at). */
export async function processTable(): Promise<ProcessEntry[]> {
  const ps = await run("ps", ["-e", "-o", "pid=,ppid=,stat=,args="], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" }, timeoutMs: 10_000 });
  if (ps.code !== 0) throw new Error(`ps failed: ${ps.stderr}`);
  const entries: ProcessEntry[] = [];
  for (const line of ps.stdout.split("\n")) {
    const match = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (match) entries.push({ pid: Number(match[1]), ppid: Number(match[2]), stat: match[3] as string, args: match[4] as string });
  }
  return entries;
}

/** A helper process: a live `node …/helper.cjs`, or a zombie (whose args ps shows as `[node] <defunct>`). */
export function isHelper(entry: ProcessEntry): boolean {
  return /\bhelper\.cjs\b/.test(entry.args);
}

export function isZombie(entry: ProcessEntry): boolean {
  return entry.stat.startsWith("Z");
}

/** The children of `parent` in `table`. */
export function childrenOf(table: readonly ProcessEntry[], parent: number): ProcessEntry[] {
  return table.filter((entry) => entry.ppid === parent);
}

/** The live helpers whose parent is `parent`. */
export function helpersOf(table: readonly ProcessEntry[], parent: number): ProcessEntry[] {
  return childrenOf(table, parent).filter((entry) => isHelper(entry) && !isZombie(entry));
}

/** The `ps` lines of the given processes and their children, for the test log. */
export function describeTree(table: readonly ProcessEntry[], roots: readonly number[]): string {
  const lines: string[] = [];
  for (const root of roots) {
    for (const entry of table.filter((e) => e.pid === root || e.ppid === root)) {
      lines.push(`${String(entry.pid).padStart(7)} ${String(entry.ppid).padStart(7)} ${entry.stat.padEnd(5)} ${entry.args}`);
    }
  }
  return `    PID    PPID STAT  COMMAND\n${[...new Set(lines)].join("\n")}`;
}

/** Threads the process still has: a leader turns zombie while its other threads still exit, holding its files. */
function threadsLeft(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return 0;
  }
}

/**
 * SIGKILLs each pid and waits (bounded) until the kernel has closed its end of the socketpair: gone, or a zombie
 * with no thread left (the leader alone turns Z first, and a request sent then is lost in flight).
 */
export async function killAndWaitDead(pids: readonly number[]): Promise<void> {
  for (const pid of pids) process.kill(pid, "SIGKILL");
  for (let i = 0; i < 200; i++) {
    const table = await processTable();
    const alive = pids.filter((pid) => table.some((entry) => entry.pid === pid && (!isZombie(entry) || threadsLeft(pid) > 1)));
    if (alive.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`processes ${pids.join(", ")} still run after SIGKILL`);
}

/**
 * A host program that reads one command per line on stdin and answers one line on stdout; its stderr (the module's
 * and the helper's log lines) is kept. It runs in its own session and process group, killed on stop() or timeout.
 */
export interface LineHost {
  child: ChildProcess;
  pid: number;
  /** Sends one line and returns the next line the host writes (bounded by timeoutMs). */
  ask(line: string, timeoutMs?: number): Promise<string>;
  /** The next line the host writes without being asked (its start-up line). */
  nextLine(timeoutMs?: number): Promise<string>;
  stderr(): string;
  /** The last lines of stderr, for assertion messages. */
  stderrTail(lines?: number): string;
  /** Closes stdin, waits for the exit (10 s), then kills the group. Returns how it ended: "exit 0", "signal SIGPIPE". */
  stop(): Promise<string>;
}

export function startLineHost(file: string, args: readonly string[], options: { env: NodeJS.ProcessEnv; cwd?: string }): LineHost {
  const child = spawn(file, args, { env: options.env, cwd: options.cwd, detached: true, stdio: ["pipe", "pipe", "pipe"] });
  if (child.pid === undefined) throw new Error(`could not start ${file}`);
  const pid = child.pid;
  const errors: Buffer[] = [];
  child.stderr.on("data", (chunk: Buffer) => errors.push(chunk));
  child.stdin.on("error", () => {
    // The host may exit before reading; its exit status and stderr tell why.
  });
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  createInterface({ input: child.stdout }).on("line", (line) => {
    lines.push(line);
    wake?.();
  });
  const exited = once(child, "close").then(() => {
    closed = true;
    wake?.();
  });
  const nextLine = async (timeoutMs = 60_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    while (lines.length === 0) {
      const tail = () => Buffer.concat(errors).toString("utf8").split("\n").slice(-40).join("\n");
      if (closed) throw new Error(`${file} ended (exit ${child.exitCode}, signal ${child.signalCode}) without answering\n--- stderr (end) ---\n${tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${file} did not answer within ${timeoutMs} ms\n--- stderr (end) ---\n${tail()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
    return lines.shift() as string;
  };
  const killGroup = () => {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  };
  return {
    child,
    pid,
    nextLine,
    async ask(line, timeoutMs) {
      child.stdin.write(`${line}\n`);
      return nextLine(timeoutMs);
    },
    stderr: () => Buffer.concat(errors).toString("utf8"),
    stderrTail: (count = 40) => Buffer.concat(errors).toString("utf8").split("\n").slice(-count).join("\n"),
    async stop() {
      if (!closed) {
        child.stdin.end();
        const timer = setTimeout(killGroup, 10_000);
        await exited;
        clearTimeout(timer);
      }
      return child.exitCode !== null ? `exit ${child.exitCode}` : `signal ${child.signalCode}`;
    },
  };
}

/** The module's lines about its helper and sessions, and every call not answered CKR_OK, from a host's stderr. */
export function respawnLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => /^AZURE_KEYVAULT: .*(helper|session|-> CKR_(?!OK\b))/.test(line));
}

/** One PKCS#11 call from a call log: its name, the session it used, the object handle it named, what it returned. */
export interface LoggedCall {
  name: string;
  /** hSession going in, or the new handle a C_OpenSession returned. */
  session?: string;
  /** The object handle going in (hKey, hObject). */
  object?: string;
  rv: string;
}

function loggedCall(name: string, body: string, session: RegExp, newSession: RegExp, object: RegExp, rv: RegExp): LoggedCall {
  const call: LoggedCall = { name, rv: rv.exec(body)?.[1] ?? "(no return)" };
  // A failed C_OpenSession leaves *phSession undefined (NSS logs whatever it holds).
  const handle = session.exec(body)?.[1] ?? (call.rv === "CKR_OK" ? newSession.exec(body)?.[1] : undefined);
  if (handle !== undefined) call.session = handle;
  const objectHandle = object.exec(body)?.[1];
  if (objectHandle !== undefined) call.object = objectHandle;
  return call;
}

/** NSS's own call log: NSS_DEBUG_PKCS11_MODULE=<module name>, NSPR_LOG_MODULES=nss_mod_log:4, NSPR_LOG_FILE. */
export function parseNssLog(log: string): LoggedCall[] {
  const calls: LoggedCall[] = [];
  let current: { name: string; lines: string[] } | undefined;
  const flush = () => {
    if (!current) return;
    const body = current.lines.join("\n");
    calls.push(loggedCall(current.name, body, /^\s+hSession = (0x[0-9a-f]+)/m, /^\s+\*phSession = (0x[0-9a-f]+)/m, /^\s+h(?:Key|Object) = (0x[0-9a-f]+)/m, /^\s+rv = (\w+)/m));
  };
  for (const line of log.split("\n")) {
    const match = /^[^:]*\]: (?:(C_\w+)|(.*))$/.exec(line);
    if (!match) continue;
    if (match[1]) {
      flush();
      current = { name: match[1], lines: [] };
    } else {
      current?.lines.push(match[2] as string);
    }
  }
  flush();
  return calls;
}

/** OpenSC's pkcs11-spy log (PKCS11SPY=<module>, PKCS11SPY_OUTPUT=<file>). */
export function parseSpyLog(log: string): LoggedCall[] {
  const calls: LoggedCall[] = [];
  for (const block of log.split(/\n(?=\d+: C_)/)) {
    const head = /^\d+: (C_\w+)/.exec(block);
    if (!head) continue;
    calls.push(loggedCall(head[1] as string, block, /^\[in\] hSession = (0x[0-9a-f]+)/m, /^\[out\] \*?phSession = (0x[0-9a-f]+)/m, /^\[in\] h(?:Key|Object) = (0x[0-9a-f]+)/m, /^Returned:\s+\d+\s+(\w+)/m));
  }
  return calls;
}

/** "C_SignInit(0x6, obj 0x1) -> CKR_OK" lines, for the test log and the docs. */
export function describeCalls(calls: readonly LoggedCall[]): string {
  return calls
    .map((call) => `${call.name}(${[call.session, call.object && `obj ${call.object}`].filter(Boolean).join(", ")}) -> ${call.rv}`)
    .join("\n");
}

/** The slot id (decimal) holding `tokenLabel`, as pkcs11-tool -L reports it; SunPKCS11 selects a token by slot. */
export async function slotIdOf(modulePath: string, tokenLabel: string, env: NodeJS.ProcessEnv): Promise<string> {
  const list = await run("pkcs11-tool", ["--module", modulePath, "-L"], { env, timeoutMs: 60_000 });
  for (const block of list.stdout.split(/^(?=Slot \d+ )/m)) {
    const slot = /^Slot \d+ \((0x[0-9a-f]+)\)/.exec(block)?.[1];
    if (slot && new RegExp(`token label\\s*: ${tokenLabel}\\s*$`, "m").test(block)) return String(Number.parseInt(slot, 16));
  }
  throw new Error(`no slot holds token ${tokenLabel}:\n${list.stdout}\n${list.stderr}`);
}

/**
 * The sessions a host had open when the helper died (opened and not closed in calls[0, killedAt)) and those of them
 * it used afterwards: a session that works after the respawn kept its handle.
 */
export function sessionsAcross(calls: readonly LoggedCall[], killedAt: number): { openAtKill: string[]; reused: string[]; openedAfter: string[] } {
  const open = new Set<string>();
  for (const call of calls.slice(0, killedAt)) {
    if (call.rv !== "CKR_OK" || call.session === undefined) continue;
    if (call.name === "C_OpenSession") open.add(call.session);
    if (call.name === "C_CloseSession") open.delete(call.session);
  }
  const after = calls.slice(killedAt);
  const openedAfter = after.filter((call) => call.name === "C_OpenSession" && call.rv === "CKR_OK").map((call) => call.session as string);
  const usedAfter = new Set(after.filter((call) => call.name !== "C_OpenSession" && call.session !== undefined).map((call) => call.session as string));
  return { openAtKill: [...open], reused: [...open].filter((session) => usedAfter.has(session)), openedAfter };
}
