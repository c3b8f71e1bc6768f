// The helper process, in one of three roles:
// - a private helper: the C shim spawns it with one end of a socketpair as fd 3 and forwards every PKCS#11 call
//   over it (no arguments);
// - the shared agent (`agent ...`, src/agent/): many host processes connect to its Unix socket;
// - one context of the agent, as a worker thread of it (src/agent/context.ts).
// Nothing is written to stdout; logs go to stderr.
import { Socket } from "node:net";
import { isMainThread, workerData } from "node:worker_threads";
import { runAgentCommand } from "../agent/command.ts";
import { runContextWorker } from "../agent/context.ts";
import { log } from "../log/log.ts";
import { describe, serve } from "./serve.ts";

const LINK_FD = 3;

function privateHelper(): void {
  let socket: Socket;
  try {
    socket = new Socket({ fd: LINK_FD, readable: true, writable: true });
  } catch (error) {
    log.error(`the helper must be started by the PKCS#11 module with its link on fd ${LINK_FD}: ${describe(error)}`);
    process.exit(2);
  }
  serve(socket);
}

function main(): void {
  process.on("uncaughtException", (error) => log.error(`uncaught exception: ${describe(error)}`));
  process.on("unhandledRejection", (error) => log.error(`unhandled rejection: ${describe(error)}`));
  if (!isMainThread && (workerData as { role?: string } | undefined)?.role === "agent-context") {
    runContextWorker();
  } else if (process.argv[2] === "agent") {
    runAgentCommand(process.argv.slice(3)).then(
      (code) => process.exit(code),
      (error: unknown) => {
        log.error(`agent: ${error instanceof Error ? error.message : String(error)}`);
        process.exit(1);
      },
    );
  } else {
    privateHelper();
  }
}

main();
