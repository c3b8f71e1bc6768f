// `azure-keyvault-pkcs11 agent [options]`: the agent in the foreground (systemd units), or `--detach`, which the
// shim uses to start one on demand: a short-lived launcher that starts the agent in a session of its own, waits
// until it listens, and exits, so that the agent is no child of the host and never its zombie.
import { spawn } from "node:child_process";
import { getgrnam } from "./groups.ts";
import { closeSync, openSync, statSync, truncateSync } from "node:fs";
import path from "node:path";
import { log } from "../log/log.ts";
import { AGENT_LOG_NAME, agentSocketPath } from "./paths.ts";
import { DEFAULT_IDLE_SECONDS, runAgent } from "./server.ts";

export const AGENT_USAGE = `usage: azure-keyvault-pkcs11 agent [options]

Runs the shared signing agent in the foreground (docs/agent.md).

options:
  --socket PATH        where to listen (default: AZURE_KEYVAULT_PKCS11_AGENT_SOCKET, else
                       $XDG_RUNTIME_DIR/azure-keyvault-pkcs11/agent.sock)
  --idle-seconds N     exit after N seconds without connections (default: AZURE_KEYVAULT_PKCS11_AGENT_IDLE_SECONDS,
                       else ${DEFAULT_IDLE_SECONDS}); 0 never exits on idle
  --allow-uid UID      a system agent: also admit this user (repeatable)
  --allow-group GROUP  a system agent: also admit this group, by name or gid (repeatable)
  --detach             start the agent in the background, log to agent.log beside the socket, and return once it
                       listens
`;

/** Keeps agent.log from growing without bound across many on-demand starts. */
const MAX_LOG_BYTES = 1024 * 1024;

interface ParsedArguments {
  socketPath: string;
  idleSeconds: number;
  allowUids: Set<number>;
  allowGids: Set<number>;
  detach: boolean;
  readyFd?: number;
}

function parseArguments(argv: string[], env: NodeJS.ProcessEnv): ParsedArguments {
  let socketPath = agentSocketPath(env);
  const idleText = env.AZURE_KEYVAULT_PKCS11_AGENT_IDLE_SECONDS;
  let idleSeconds = idleText !== undefined && idleText !== "" ? Number(idleText) : DEFAULT_IDLE_SECONDS;
  const allowUids = new Set<number>();
  const allowGids = new Set<number>();
  let detach = false;
  let readyFd: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${flag} needs a value`);
      return next;
    };
    switch (flag) {
      case "--socket":
        socketPath = path.resolve(value());
        break;
      case "--idle-seconds":
        idleSeconds = Number(value());
        break;
      case "--allow-uid": {
        const uid = Number(value());
        if (!Number.isInteger(uid) || uid < 0) throw new Error(`--allow-uid ${argv[i]}: not a uid`);
        allowUids.add(uid);
        break;
      }
      case "--allow-group": {
        const group = value();
        const gid = /^\d+$/.test(group) ? Number(group) : getgrnam(group);
        if (gid === undefined) throw new Error(`--allow-group ${group}: no such group`);
        allowGids.add(gid);
        break;
      }
      case "--detach":
        detach = true;
        break;
      case "--ready-fd":
        readyFd = Number(value());
        break;
      default:
        throw new Error(`unknown option ${flag}\n${AGENT_USAGE}`);
    }
  }
  if (!Number.isInteger(idleSeconds) || idleSeconds < 0) throw new Error(`the idle time must be a whole number of seconds, not '${idleSeconds}'`);
  return { socketPath, idleSeconds, allowUids, allowGids, detach, readyFd };
}

export async function runAgentCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stderr.write(AGENT_USAGE);
    return 0;
  }
  const options = parseArguments(argv, env);
  if (options.detach) return launchDetached(argv.filter((arg) => arg !== "--detach"), options.socketPath);
  return runAgent(options);
}

function openLog(file: string): number {
  try {
    if (statSync(file).size > MAX_LOG_BYTES) truncateSync(file, 0);
  } catch {
    // No log yet.
  }
  return openSync(file, "a", 0o600);
}

/** Starts the agent detached and resolves once it listens (0), or with its exit status if it stops before. */
function launchDetached(args: string[], socketPath: string): Promise<number> {
  const logFd = openLog(path.join(path.dirname(socketPath), AGENT_LOG_NAME));
  const child = spawn(process.execPath, [path.join(__dirname, "helper.cjs"), "agent", ...args, "--ready-fd", "3"], {
    detached: true,
    stdio: ["ignore", "ignore", logFd, "pipe"],
  });
  closeSync(logFd);
  return new Promise((resolve) => {
    const ready = child.stdio[3] as NodeJS.ReadableStream;
    let said = "";
    ready.on("data", (chunk: Buffer) => {
      said += chunk.toString();
      if (said.includes("ready")) {
        child.unref();
        (ready as unknown as { destroy(): void }).destroy();
        resolve(0);
      }
    });
    child.once("exit", (code, signal) => {
      if (!said.includes("ready")) {
        log.error(`the agent stopped while starting (${signal ?? `status ${code}`}); see ${path.join(path.dirname(socketPath), AGENT_LOG_NAME)}`);
        resolve(1);
      }
    });
    child.once("error", (error) => {
      log.error(`cannot start the agent: ${error.message}`);
      resolve(1);
    });
  });
}
