// Serves the module link: reads request frames, runs each as its own async task and answers it when done, in
// any order, so that many host threads can wait on the vault at once (docs/protocol.md).
import type { Duplex } from "node:stream";
import { isDebug, log, withLogSink } from "../log/log.ts";
import { Reader, ProtocolError } from "../protocol/codec.ts";
import { FrameReader, logFrame, replyWriter, sealReply, type RequestFrame } from "../protocol/frames.ts";
import { FunctionId } from "../protocol/functions.ts";
import { CKR, rvName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { isPromise } from "../session/immediate.ts";
import { HANDLERS } from "./dispatch.ts";
import { Pkcs11Module } from "./module.ts";

export function describe(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

export interface ServeOptions {
  /** Called once when the link ends (end-of-file, error, C_Finalize); a private helper exits. */
  exit?: (code: number) => void;
  /** Send the log lines of each call to the host that made it, as log frames (an agent's connections). */
  forwardLogs?: boolean;
  /** Called whenever the last call in flight has been answered (an agent draining for SIGTERM). */
  onIdle?: () => void;
}

export interface ServedLink {
  /** Calls read but not yet answered. */
  inFlight(): number;
  /** Ends the link; calls still running are answered into the void. */
  close(): void;
}

/** Serves one application over `socket`: the private helper's socketpair, or one connection to an agent. */
export function serve(socket: Duplex, module = new Pkcs11Module(), options: ServeOptions = {}): ServedLink {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let finished = false;
  let inFlight = 0;

  const finish = (code: number): void => {
    if (finished) return;
    finished = true;
    exit(code);
  };

  const send = (frame: Buffer): void => {
    if (!socket.destroyed) socket.write(frame);
  };

  async function answer(frame: RequestFrame): Promise<void> {
    const handler = HANDLERS.get(frame.functionId);
    const writer = replyWriter();
    if (!handler) {
      log.error(`request for unknown function id ${frame.functionId}: the module library and helper come from different builds`);
      send(sealReply(writer, frame.id, CKR.GENERAL_ERROR));
      return;
    }
    const started = performance.now();
    let args: unknown;
    let result: unknown;
    let rv: number = CKR.OK;
    try {
      const reader = new Reader(frame.payload);
      args = handler.decode(reader);
      reader.end();
      // No await for a plain value: the reply is written before this read callback returns (src/session/immediate.ts).
      const running = handler.run(module, args);
      result = isPromise(running) ? await running : running;
      rv = handler.rvOf?.(result) ?? CKR.OK;
    } catch (error) {
      result = undefined;
      if (error instanceof Pkcs11Error) {
        rv = error.rv;
        // Errors built with an explanation are worth a line, once a minute when they repeat; plain state errors are
        // for debugging, and vault failures were logged where they were mapped.
        if (error.logged) log.debug(`${handler.name}: ${error.message} -> ${rvName(rv)}`);
        else if (error.message !== rvName(error.rv)) log.warnOncePerMinute(`${handler.name}: ${error.message} -> ${rvName(rv)}`);
      } else if (error instanceof ProtocolError) {
        rv = CKR.GENERAL_ERROR;
        log.error(`${handler.name}: malformed request: ${error.message}`);
      } else {
        rv = CKR.GENERAL_ERROR;
        log.error(`${handler.name}: internal error: ${describe(error)}`);
      }
    }
    try {
      handler.encode(writer, result, args);
    } catch (error) {
      log.error(`${handler.name}: cannot encode the reply: ${describe(error)}`);
      rv = CKR.GENERAL_ERROR;
    }
    if (isDebug()) log.debug(`${handler.name} -> ${rvName(rv)} (${(performance.now() - started).toFixed(2)} ms)`);
    send(sealReply(writer, frame.id, rv));
    if (frame.functionId === FunctionId.C_Finalize && rv === CKR.OK) {
      // The shim waits for this reply, then for our exit.
      socket.end(() => finish(0));
    }
  }

  const sendLine = (line: string): boolean => {
    if (finished || socket.destroyed) return false;
    socket.write(logFrame(line));
    return true;
  };
  const track = (frame: RequestFrame): void => {
    inFlight++;
    void answer(frame).finally(() => {
      if (--inFlight === 0) options.onIdle?.();
    });
  };
  const frames = new FrameReader((frame) => {
    if (options.forwardLogs) withLogSink(sendLine, () => track(frame));
    else track(frame);
  });

  socket.on("data", (chunk: Buffer) => {
    try {
      frames.push(chunk);
    } catch (error) {
      log.error(`protocol error on the module link, closing it: ${error instanceof Error ? error.message : String(error)}`);
      socket.destroy();
      finish(1);
    }
  });
  socket.on("end", () => finish(0));
  socket.on("close", () => finish(0));
  socket.on("error", (error) => {
    log.error(`module link error: ${error.message}`);
    finish(1);
  });
  return {
    inFlight: () => inFlight,
    close: () => {
      socket.end();
      finish(0);
    },
  };
}
