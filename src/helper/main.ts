// The helper process: the C shim spawns it with one end of a socketpair as fd 3 and forwards every PKCS#11 call
// over it. Nothing is written to stdout; logs go to stderr.
import { Socket } from "node:net";
import { log } from "../log/log.ts";
import { describe, serve } from "./serve.ts";

const LINK_FD = 3;

function main(): void {
  process.on("uncaughtException", (error) => log.error(`uncaught exception: ${describe(error)}`));
  process.on("unhandledRejection", (error) => log.error(`unhandled rejection: ${describe(error)}`));
  let socket: Socket;
  try {
    socket = new Socket({ fd: LINK_FD, readable: true, writable: true });
  } catch (error) {
    log.error(`the helper must be started by the PKCS#11 module with its link on fd ${LINK_FD}: ${describe(error)}`);
    process.exit(2);
  }
  serve(socket);
}

main();
