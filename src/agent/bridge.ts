// A host's connection crosses from the agent's main thread, which owns the socket, to the context's worker thread,
// which serves it: the bytes travel over a MessagePort both ways. Node cannot hand a socket to a worker, and each
// context needs a worker of its own because the Azure SDK reads credentials and proxies from process.env, which
// a worker has to itself.
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import type { MessagePort } from "node:worker_threads";

type BridgeMessage = Uint8Array | { end: true };

function isEnd(message: BridgeMessage): message is { end: true } {
  return !(message instanceof Uint8Array);
}

/** Main thread: moves `socket`'s bytes to `port` and back; `leftover` is what arrived with the hello. */
export function bridgeSocket(socket: Socket, port: MessagePort, leftover: Buffer, onClose: () => void): void {
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    port.close();
    socket.destroy();
    onClose();
  };
  if (leftover.length > 0) port.postMessage(leftover);
  socket.on("data", (chunk: Buffer) => port.postMessage(chunk));
  socket.on("end", () => port.postMessage({ end: true } satisfies BridgeMessage));
  socket.on("close", close);
  socket.on("error", () => close());
  port.on("message", (message: BridgeMessage) => {
    if (isEnd(message)) socket.end();
    else if (!socket.destroyed) socket.write(message);
  });
  port.on("close", close);
  // readHello paused the socket; attaching listeners does not resume a stream paused on purpose.
  socket.resume();
}

/** Worker thread: the connection as a Duplex, for src/helper/serve.ts. */
export class PortDuplex extends Duplex {
  constructor(private readonly port: MessagePort) {
    super();
    port.on("message", (message: BridgeMessage) => {
      if (isEnd(message)) this.push(null);
      else this.push(Buffer.from(message.buffer, message.byteOffset, message.byteLength));
    });
    port.on("close", () => this.destroy());
  }

  override _read(): void {
    // Messages are pushed as they arrive; a host sends at most one frame per waiting call.
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.port.postMessage(chunk);
    done();
  }

  override _final(done: (error?: Error | null) => void): void {
    this.port.postMessage({ end: true } satisfies BridgeMessage);
    done();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.port.close();
    done(error);
  }
}
