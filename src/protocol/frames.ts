// Framing of docs/protocol.md: requests are `u32 length, u32 id, u32 function, payload`, replies are
// `u32 length, u32 id, U rv, payload`. The reader copes with frames split across chunks and many frames per chunk.
import { ProtocolError, Writer } from "./codec.ts";

export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
const REQUEST_HEADER = 8; // id + function id, after the length
export const REPLY_HEADER_BYTES = 16; // length + id + rv

export interface RequestFrame {
  id: number;
  functionId: number;
  payload: Buffer;
}

export class FrameReader {
  // Chunks of an unfinished frame, joined once it is complete: joining on every push would copy a 64 MiB frame
  // that arrives in 64 KiB chunks a thousand times over.
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes needed before the pending chunks can yield something: the length field, then the whole frame. */
  private needed = 4;

  constructor(private readonly onFrame: (frame: RequestFrame) => void) {}

  /** Feeds bytes from the socket; throws ProtocolError when the peer breaks the format. */
  push(chunk: Buffer): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.needed) return;
    const data = this.pending.length === 1 ? chunk : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.needed = 4;
    let offset = 0;
    while (data.length - offset >= 4) {
      const length = data.readUInt32LE(offset);
      if (length > MAX_FRAME_BYTES) throw new ProtocolError(`request frame of ${length} bytes exceeds the 64 MiB limit`);
      if (length < REQUEST_HEADER) throw new ProtocolError(`request frame of ${length} bytes is shorter than its header`);
      if (data.length - offset - 4 < length) {
        this.needed = 4 + length;
        break;
      }
      const start = offset + 4;
      this.onFrame({
        id: data.readUInt32LE(start),
        functionId: data.readUInt32LE(start + 4),
        payload: data.subarray(start + REQUEST_HEADER, start + length),
      });
      offset = start + length;
    }
    if (offset < data.length) {
      // Keep only the unfinished frame; a copy so that the big chunk it came from can be freed.
      const rest = Buffer.from(data.subarray(offset));
      this.pending.push(rest);
      this.pendingBytes = rest.length;
    }
  }
}

/** A writer whose first bytes are reserved for the reply header, filled in by `sealReply`. */
export function replyWriter(): Writer {
  return new Writer(256, REPLY_HEADER_BYTES);
}

export function sealReply(writer: Writer, id: number, rv: number): Buffer {
  writer.patchU32(0, writer.length - 4);
  writer.patchU32(4, id);
  writer.patchUlong(8, rv);
  return writer.finish();
}

/**
 * An unsolicited log line for the host (request id 0, never a call's id): an agent serves processes whose stderr
 * it does not share, so it sends them the lines of their calls and the shim writes them to the host's stderr.
 */
export function logFrame(line: string): Buffer {
  const writer = replyWriter();
  writer.bytes(Buffer.from(line, "utf8"));
  return sealReply(writer, 0, 0);
}
