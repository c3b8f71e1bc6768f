// Seeded fuzzing of the helper's side of docs/protocol.md. Unit level: random and mutated byte streams through
// FrameReader, every frame decoded by every handler of HANDLERS (decode only): ProtocolError is the only exception
// allowed, and how the stream is cut into chunks changes nothing. Process level: the real helper (build/helper.cjs)
// with its link on fd 3 gets malformed frames and must answer with an error rv or close the link, exit cleanly,
// write nothing to stdout, and keep its memory bounded while a 64 MiB frame trickles in.
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { ProtocolError, Reader, Writer } from "../../src/protocol/codec.ts";
import { FrameReader, MAX_FRAME_BYTES, type RequestFrame } from "../../src/protocol/frames.ts";
import { FunctionId, PROTOCOL_VERSION } from "../../src/protocol/functions.ts";
import { CKR } from "../../src/pkcs11/constants.ts";
import { HANDLERS } from "../../src/helper/dispatch.ts";
import { repoRoot, requestFrame } from "../module/harness.ts";

/** mulberry32: small, seeded, and the same on every machine. */
function prng(seed: number): { next(): number; below(n: number): number; bytes(n: number): Buffer } {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 2 ** 32;
  };
  const below = (n: number): number => Math.floor(next() * n);
  const bytes = (n: number): Buffer => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = below(256);
    return out;
  };
  return { next, below, bytes };
}
type Random = ReturnType<typeof prng>;


const FUNCTION_IDS = [...HANDLERS.keys()];

/** A payload built from the protocol's primitives in a random order: close to what the decoders expect. */
function plausiblePayload(random: Random): Buffer {
  const w = new Writer();
  const fields = random.below(8);
  const edgeUlongs = [0, 1, 2, 0xffffffff, -1, 2 ** 53 - 1, 2 ** 40];
  for (let i = 0; i < fields; i++) {
    switch (random.below(7)) {
      case 0:
        w.u8(random.below(256));
        break;
      case 1:
        w.u32(random.below(2) ? random.below(8) : random.below(2 ** 32));
        break;
      case 2:
        w.ulong(edgeUlongs[random.below(edgeUlongs.length)]!);
        break;
      case 3:
        w.bytes(random.bytes(random.below(3) === 0 ? random.below(600) : random.below(40)));
        break;
      case 4: {
        const count = random.below(5);
        w.u32(count);
        for (let a = 0; a < count; a++) w.ulong(random.below(0x200)).bytes(random.bytes(random.below(12)));
        break;
      }
      case 5:
        // MECH: type, kind (0-3 and invalid ones), then what the kind announces, or not
        w.ulong(random.below(0x1050)).u8(random.below(6));
        if (random.below(2)) w.bytes(random.bytes(random.below(48)));
        break;
      default:
        w.u8(random.below(3)).ulong(edgeUlongs[random.below(edgeUlongs.length)]!);
    }
  }
  return Buffer.from(w.finish());
}

function mutate(random: Random, data: Buffer): Buffer {
  const out = Buffer.from(data);
  const edits = random.below(4);
  for (let i = 0; i < edits && out.length > 0; i++) {
    const at = random.below(out.length);
    switch (random.below(4)) {
      case 0:
        out[at] ^= 1 << random.below(8);
        break;
      case 1:
        out[at] = [0, 0xff, 0x7f, 0x80][random.below(4)]!;
        break;
      case 2:
        if (at + 4 <= out.length) out.writeUInt32LE([0xffffffff, 0x7fffffff, 0x04000000, random.below(2 ** 32)][random.below(4)]!, at);
        break;
      default:
        out[at] = random.below(256);
    }
  }
  if (random.below(5) === 0) return out.subarray(0, random.below(out.length + 1));
  return out;
}

/** A byte stream of request frames, some mutated, some raw garbage. */
function stream(random: Random): Buffer {
  const parts: Buffer[] = [];
  const frames = 1 + random.below(6);
  for (let i = 0; i < frames; i++) {
    const id = random.below(2) ? FUNCTION_IDS[random.below(FUNCTION_IDS.length)]! : random.below(2 ** 32);
    let frame = requestFrame(random.below(2 ** 32), id, plausiblePayload(random));
    const r = random.below(10);
    if (r < 3) frame = mutate(random, frame);
    else if (r === 3) frame = random.bytes(random.below(64));
    parts.push(frame);
  }
  return Buffer.concat(parts);
}

interface Outcome {
  frames: string[];
  error?: string;
}

function feed(data: Buffer, cuts: number[]): Outcome {
  const frames: string[] = [];
  const reader = new FrameReader((frame: RequestFrame) => frames.push(`${frame.id}/${frame.functionId}/${frame.payload.toString("hex")}`));
  let start = 0;
  try {
    for (const cut of [...cuts, data.length]) {
      reader.push(data.subarray(start, cut));
      start = cut;
    }
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return { frames, error: error.message };
  }
  return { frames };
}

test("FrameReader and every handler's decoder throw nothing but ProtocolError, however the stream is cut", (t) => {
  const random = prng(0x5eed);
  const foreign: string[] = [];
  let decoded = 0;
  let rejected = 0;
  let frameErrors = 0;
  for (let round = 0; round < 1500; round++) {
    const data = stream(random);
    const whole = feed(data, []);
    const cuts = Array.from({ length: random.below(8) }, () => random.below(data.length + 1)).sort((a, b) => a - b);
    t.deepEqual(feed(data, cuts), whole, `round ${round}: chunking changed the frames`);
    if (whole.error) frameErrors++;
    const reader = new FrameReader((frame) => {
      for (const [functionId, handler] of HANDLERS) {
        try {
          const r = new Reader(frame.payload);
          handler.decode(r);
          r.end();
          decoded++;
        } catch (error) {
          if (error instanceof ProtocolError) rejected++;
          else foreign.push(`round ${round} function ${functionId} ${handler.name}: ${String(error)}`);
        }
      }
    });
    try {
      reader.push(data);
    } catch (error) {
      if (!(error instanceof ProtocolError)) foreign.push(`round ${round} FrameReader: ${String(error)}`);
    }
  }
  t.deepEqual(foreign, []);
  // The streams reached both sides of every check.
  t.true(decoded > 1000 && rejected > 1000 && frameErrors > 50, `decoded ${decoded}, rejected ${rejected}, frame errors ${frameErrors}`);
});

test("a 64 MiB frame in 64 KiB chunks is joined once, not on every chunk", (t) => {
  const chunk = 64 * 1024;
  const frame = Buffer.alloc(4 + MAX_FRAME_BYTES);
  frame.writeUInt32LE(MAX_FRAME_BYTES, 0);
  frame.writeUInt32LE(7, 4);
  frame.writeUInt32LE(FunctionId.C_Digest, 8);
  let payloadBytes = -1;
  const reader = new FrameReader((got) => (payloadBytes = got.payload.length));
  // Count what Buffer.concat copies while the frame arrives: joining pending chunks on every push copies the
  // frame about a thousand times over (quadratic), joining once copies it once.
  const concat = Buffer.concat;
  let copied = 0;
  Buffer.concat = ((list: readonly Uint8Array[], totalLength?: number) => {
    const joined = concat(list, totalLength);
    copied += joined.length;
    return joined;
  }) as typeof Buffer.concat;
  try {
    for (let offset = 0; offset < frame.length; offset += chunk) reader.push(frame.subarray(offset, offset + chunk));
  } finally {
    Buffer.concat = concat;
  }
  t.is(payloadBytes, MAX_FRAME_BYTES - 8);
  t.true(copied <= 2 * frame.length, `${copied} bytes copied for a ${frame.length}-byte frame`);
});

// ---- the helper process --------------------------------------------------------------------------------

const HELPER_FAULTS = /uncaught exception|unhandled rejection|internal error|cannot encode|RangeError|TypeError/;
const DEFINED_RVS = new Set<number>(Object.values(CKR));

interface Helper {
  child: ChildProcess;
  link: Socket;
  replies: Map<number, { rv: bigint; length: number; payload: Buffer }>;
  stdout(): number;
  stderr(): string;
  closed: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  rssKiB(): number;
}

let dir: string;
test.before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "akv-frames-fuzz-"));
  // A configured key on a vault that refuses connections: C_Initialize succeeds without waiting for it, so that
  // garbage payloads reach the handlers of an initialised module too.
  writeFileSync(path.join(dir, "config.json"), JSON.stringify({ slots: [{ key_name: "k", label: "k", vault_url: "https://127.0.0.1:9" }] }));
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function startHelper(): Helper {
  const child = spawn(process.execPath, [path.join(repoRoot, "build", "helper.cjs")], {
    stdio: ["ignore", "pipe", "pipe", "pipe"],
    env: { ...process.env, AZURE_KEYVAULT_PKCS11_CONFIG: path.join(dir, "config.json"), IDENTITY_ENDPOINT: "http://127.0.0.1:9/token", IDENTITY_HEADER: "x" },
  });
  const link = child.stdio[3] as Socket;
  let stdoutBytes = 0;
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => (stdoutBytes += chunk.length));
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const replies = new Map<number, { rv: bigint; length: number; payload: Buffer }>();
  let pending = Buffer.alloc(0);
  link.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
      const length = pending.readUInt32LE(0);
      replies.set(pending.readUInt32LE(4), { rv: length >= 12 ? pending.readBigUInt64LE(8) : -1n, length, payload: Buffer.from(pending.subarray(16, 4 + length)) });
      pending = pending.subarray(4 + length);
    }
  });
  link.on("error", () => undefined); // a reset after the helper drops the link
  const closed = new Promise<void>((resolve) => link.once("close", () => resolve()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const rssKiB = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? NaN);
  return { child, link, replies, stdout: () => stdoutBytes, stderr: () => stderr, closed, exited, rssKiB };
}

const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(condition: () => boolean, rounds = 400): Promise<boolean> {
  for (let i = 0; i < rounds && !condition(); i++) await tick(25);
  return condition();
}

/** C_Initialize as this build's shim sends it: protocol version, sizeof(CK_ULONG), flags, call timeout. */
function initializePayload(): Buffer {
  return new Writer().u32(PROTOCOL_VERSION).u8(8).ulong(0).ulong(60_000).finish();
}

/** The helper closed the link after a protocol error: one log line, a clean exit, nothing on stdout. */
async function assertDropped(t: import("ava").ExecutionContext, helper: Helper, what: string): Promise<void> {
  const { code, signal } = await helper.exited;
  await helper.closed;
  t.is(signal, null, `${what}: killed by a signal\n${helper.stderr()}`);
  t.true(code === 0 || code === 1, `${what}: exit code ${code}\n${helper.stderr()}`);
  t.regex(helper.stderr(), /protocol error on the module link/, what);
  t.notRegex(helper.stderr(), HELPER_FAULTS, what);
  t.is(helper.stdout(), 0, `${what}: wrote to stdout`);
}

for (const [name, header] of [
  ["a length past 64 MiB", 0xffffffff],
  ["a length one past 64 MiB", MAX_FRAME_BYTES + 1],
  ["a length shorter than the header", 7],
  ["a zero length", 0],
] as const) {
  test(`the helper drops the link on ${name}, after answering the frames before it`, async (t) => {
    const helper = startHelper();
    const bad = Buffer.alloc(16);
    bad.writeUInt32LE(header, 0);
    helper.link.write(Buffer.concat([requestFrame(5, FunctionId.C_GetInfo, Buffer.alloc(0)), bad]));
    await assertDropped(t, helper, name);
    t.is(helper.replies.get(5)?.rv, BigInt(CKR.CRYPTOKI_NOT_INITIALIZED));
  });
}

test("a frame cut short by end-of-file gets no reply and the helper exits 0", async (t) => {
  const helper = startHelper();
  const frame = requestFrame(9, FunctionId.C_GetInfo, Buffer.alloc(100, 1));
  helper.link.end(frame.subarray(0, 60));
  const { code, signal } = await helper.exited;
  t.deepEqual({ code, signal }, { code: 0, signal: null }, helper.stderr());
  t.is(helper.replies.size, 0);
  t.notRegex(helper.stderr(), HELPER_FAULTS);
  t.is(helper.stdout(), 0);
});

/** Random payloads that `functionId`'s decoder accepts: garbage values in the right shape reach the handler's code. */
function acceptedPayloads(random: Random, functionId: number, wanted: number): Buffer[] {
  const handler = HANDLERS.get(functionId)!;
  const found: Buffer[] = [];
  for (let i = 0; i < 3000 && found.length < wanted; i++) {
    const payload = plausiblePayload(random);
    try {
      const r = new Reader(payload);
      handler.decode(r);
      r.end();
      found.push(payload);
    } catch {
      // not this function's shape
    }
  }
  return found;
}

test("garbage function ids and garbage payloads get an error rv each, before and after C_Initialize, and the link stays", async (t) => {
  const random = prng(0xf00d);
  const helper = startHelper();
  let id = 100;
  const sent: number[] = [];
  const send = (functionId: number, payload: Buffer): void => {
    sent.push(++id);
    helper.link.write(requestFrame(id, functionId, payload));
  };
  const garbageIds = [0, 4, 10, 47, 66, 68, 69, 70, 73, 255, 257, 258, 0xffff, 0xffffffff];
  // After C_Initialize, half the well-shaped payloads name an open session and an object that exist.
  let session: bigint | undefined;
  const round = (): void => {
    for (const functionId of garbageIds) send(functionId, random.bytes(random.below(32)));
    for (const functionId of FUNCTION_IDS) {
      if (functionId === FunctionId.C_Initialize || functionId === FunctionId.C_Finalize) continue;
      for (let i = 0; i < 4; i++) send(functionId, i < 2 ? random.bytes(random.below(80)) : mutate(random, plausiblePayload(random)));
      for (const payload of acceptedPayloads(random, functionId, 6)) {
        if (session !== undefined && random.below(2) && payload.length >= 8) payload.writeBigUInt64LE(session, 0);
        if (session !== undefined && random.below(2) && payload.length >= 16) payload.writeBigUInt64LE(BigInt(1 + random.below(3)), 8);
        send(functionId, payload);
      }
    }
  };
  round();
  t.true(await waitFor(() => sent.every((s) => helper.replies.has(s))), `replies to ${helper.replies.size} of ${sent.length} requests`);
  const before = sent.length;
  send(FunctionId.C_Initialize, initializePayload());
  const initId = id;
  t.true(await waitFor(() => helper.replies.has(initId)));
  t.is(helper.replies.get(initId)?.rv, BigInt(CKR.OK), helper.stderr());
  send(FunctionId.C_OpenSession, new Writer().ulong(0).ulong(4).finish());
  const openId = id;
  t.true(await waitFor(() => helper.replies.has(openId)));
  t.is(helper.replies.get(openId)?.rv, BigInt(CKR.OK), helper.stderr());
  session = helper.replies.get(openId)!.payload.readBigUInt64LE(0);
  round();
  t.true(await waitFor(() => sent.every((s) => helper.replies.has(s))), `replies to ${helper.replies.size} of ${sent.length} requests after C_Initialize`);
  for (const s of sent) {
    const reply = helper.replies.get(s)!;
    t.true(reply.length >= 12 && DEFINED_RVS.has(Number(reply.rv)), `request ${s}: rv ${reply.rv}, frame of ${reply.length} bytes`);
  }
  const histogram = new Map<bigint, number>();
  for (const s of sent) histogram.set(helper.replies.get(s)!.rv, (histogram.get(helper.replies.get(s)!.rv) ?? 0) + 1);
  t.log(`${sent.length} replies: ${[...histogram].map(([rv, n]) => `0x${rv.toString(16)}=${n}`).join(" ")}`);
  const unknown = sent.slice(0, garbageIds.length).map((s) => helper.replies.get(s)!.rv);
  t.deepEqual(unknown, garbageIds.map(() => BigInt(CKR.GENERAL_ERROR)), "an unknown function id is CKR_GENERAL_ERROR");
  t.true(before > 100);
  t.notRegex(helper.stderr(), HELPER_FAULTS);
  t.is(helper.stdout(), 0);
  helper.link.end();
  t.deepEqual(await helper.exited, { code: 0, signal: null });
});

test("a 64 MiB frame trickling in keeps the helper's memory bounded, and is answered once complete", async (t) => {
  const helper = startHelper();
  helper.link.write(requestFrame(1, FunctionId.C_GetInfo, Buffer.alloc(0)));
  t.true(await waitFor(() => helper.replies.has(1)));
  const baseline = helper.rssKiB();
  // A frame of exactly the limit, for an unknown function id so that its payload needs no meaning.
  const header = Buffer.alloc(12);
  header.writeUInt32LE(MAX_FRAME_BYTES, 0);
  header.writeUInt32LE(2, 4);
  header.writeUInt32LE(0xabcd, 8);
  helper.link.write(header);
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let sent = 8;
  let peak = 0;
  const write = (data: Buffer): Promise<void> => new Promise((resolve) => (helper.link.write(data) ? resolve() : helper.link.once("drain", () => resolve())));
  // The first quarter slowly, watching memory; then the rest at full speed.
  for (let i = 0; i < 256; i++) {
    await write(chunk);
    sent += chunk.length;
    if (i % 16 === 15) {
      await tick(10);
      peak = Math.max(peak, helper.rssKiB());
    }
  }
  const trickled = sent;
  t.log(`RSS ${baseline} KiB before, at most ${peak} KiB while ${trickled >> 10} KiB of the 64 MiB frame arrived`);
  // Pending chunks are kept as they came: memory grows with the bytes received, not with their square, and no
  // buffer the size of the announced 64 MiB is allocated before it has arrived.
  t.true(peak - baseline < (trickled >> 10) + 16 * 1024, `RSS from ${baseline} KiB to ${peak} KiB after ${trickled >> 10} KiB of the frame`);
  while (sent < MAX_FRAME_BYTES) {
    const n = Math.min(chunk.length, MAX_FRAME_BYTES - sent);
    await write(chunk.subarray(0, n));
    sent += n;
  }
  t.true(await waitFor(() => helper.replies.has(2), 2400), helper.stderr());
  t.is(helper.replies.get(2)?.rv, BigInt(CKR.GENERAL_ERROR), "the frame was read whole and its function id refused");
  t.notRegex(helper.stderr(), HELPER_FAULTS);
  t.is(helper.stdout(), 0);
  helper.link.end();
  t.deepEqual(await helper.exited, { code: 0, signal: null });
});
