// The helper's side of docs/protocol.md without the shim: frames split anywhere or packed together, the 64 MiB
// limit, and a request/reply exchange through serve() over a real socket pair.
import test from "ava";
import { spawn } from "node:child_process";
import type { Socket } from "node:net";
import path from "node:path";
import { Reader, Writer } from "../../src/protocol/codec.ts";
import { FrameReader, MAX_FRAME_BYTES, type RequestFrame } from "../../src/protocol/frames.ts";
import { repoRoot, requestFrame } from "./harness.ts";


test("the frame reader handles frames split at every byte and many frames per chunk", (t) => {
  const frames = [requestFrame(1, 3, Buffer.alloc(0)), requestFrame(2, 44, Buffer.from("abcdef")), requestFrame(3, 7, Buffer.alloc(300, 9))];
  const stream = Buffer.concat(frames);
  for (const chunkSize of [1, 2, 5, 13, stream.length]) {
    const seen: RequestFrame[] = [];
    const reader = new FrameReader((frame) => seen.push({ ...frame, payload: Buffer.from(frame.payload) }));
    for (let offset = 0; offset < stream.length; offset += chunkSize) reader.push(stream.subarray(offset, offset + chunkSize));
    t.deepEqual(
      seen.map((frame) => [frame.id, frame.functionId, frame.payload.toString("hex")]),
      [
        [1, 3, ""],
        [2, 44, Buffer.from("abcdef").toString("hex")],
        [3, 7, Buffer.alloc(300, 9).toString("hex")],
      ],
      `chunks of ${chunkSize}`,
    );
  }
});

test("a frame over 64 MiB is a protocol error", (t) => {
  const header = Buffer.alloc(12);
  header.writeUInt32LE(MAX_FRAME_BYTES + 1, 0);
  t.throws(() => new FrameReader(() => undefined).push(header), { name: "ProtocolError" });
});

test("primitives round-trip, CK_UNAVAILABLE_INFORMATION travels as all ones, short payloads are errors", (t) => {
  const writer = new Writer(4);
  writer.u8(7).u32(0xdeadbeef).ulong(-1).ulong(2 ** 40).bytes(Buffer.alloc(1000, 1)).bytes(undefined);
  const data = writer.finish();
  t.is(data.readBigUInt64LE(5), 0xffffffffffffffffn);
  const reader = new Reader(data);
  t.is(reader.u8(), 7);
  t.is(reader.u32(), 0xdeadbeef);
  t.is(reader.ulong(), -1);
  t.is(reader.ulong(), 2 ** 40);
  t.deepEqual(reader.bytes(), Buffer.alloc(1000, 1));
  t.is(reader.bytes().length, 0);
  reader.end();
  t.throws(() => new Reader(Buffer.alloc(3)).u32(), { name: "ProtocolError" });
});

test("the bundled helper answers out of order and exits on end-of-file", async (t) => {
  // A bad config makes C_Initialize fail fast without a vault; C_GetInfo before it is CKR_CRYPTOKI_NOT_INITIALIZED.
  const child = spawn(process.execPath, [path.join(repoRoot, "build", "helper.cjs")], {
    stdio: ["ignore", "ignore", "pipe", "pipe"],
    env: { ...process.env, AZURE_KEYVAULT_PKCS11_CONFIG: "/nonexistent/config.json" },
  });
  const link = child.stdio[3] as Socket;
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const replies = new Map<number, bigint>();
  let pending = Buffer.alloc(0);
  link.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
      const length = pending.readUInt32LE(0);
      replies.set(pending.readUInt32LE(4), pending.readBigUInt64LE(8));
      pending = pending.subarray(4 + length);
    }
  });
  // Protocol version 2, sizeof(CK_ULONG) 8, flags 0, call timeout 120000 ms.
  const initialize = Buffer.alloc(21);
  initialize.writeUInt32LE(2, 0);
  initialize[4] = 8;
  initialize.writeBigUInt64LE(120000n, 13);
  link.write(Buffer.concat([requestFrame(41, 3, Buffer.alloc(0)), requestFrame(42, 1, initialize)]));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  for (let i = 0; i < 200 && replies.size < 2; i++) await new Promise((resolve) => setTimeout(resolve, 25));
  t.is(replies.get(41), 0x190n); // CKR_CRYPTOKI_NOT_INITIALIZED
  t.is(replies.get(42), 0x5n); // CKR_GENERAL_ERROR
  t.regex(stderr, /\/nonexistent\/config\.json/);
  link.end();
  t.is(await exited, 0);
});
