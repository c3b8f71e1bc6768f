// Reader and writer for the primitives of docs/protocol.md. Every other file encodes and decodes through these,
// so the format lives here once.
import { CK_UNAVAILABLE_INFORMATION } from "../pkcs11/constants.ts";

export class ProtocolError extends Error {
  override name = "ProtocolError";
}

const U64_ALL_ONES = 0xffffffffffffffffn;

export interface OutRequest {
  /** The caller passed a non-NULL output pointer. */
  present: boolean;
  /** The caller's *pulLen; 0 when not present. */
  capacity: number;
}

export interface Attribute {
  type: number;
  value: Buffer;
}

export type MechanismParameter =
  | { kind: "none" }
  | { kind: "bytes"; data: Buffer }
  | { kind: "oaep"; hashAlg: number; mgf: number; source: number; sourceData: Buffer }
  /** CK_GCM_PARAMS (CKM_AES_GCM). */
  | { kind: "gcm"; iv: Buffer; ivBits: number; aad: Buffer; tagBits: number }
  | { kind: "malformed" };

/**
 * The pParameter of C_EncryptMessage / C_DecryptMessage (v3.0). For GCM it is CK_GCM_MESSAGE_PARAMS: the IV and
 * tag buffers' current contents travel in; C_EncryptMessage's reply carries the IV and tag the shim writes back.
 */
export type MessageParameter =
  | { kind: "none" }
  | { kind: "gcm"; iv: Buffer; ivFixedBits: number; ivGenerator: number; tag: Buffer; tagBits: number }
  | { kind: "malformed" };

export interface Mechanism {
  type: number;
  parameter: MechanismParameter;
}

export class Reader {
  private offset = 0;
  constructor(private readonly buffer: Buffer) {}

  private take(count: number): number {
    const start = this.offset;
    if (start + count > this.buffer.length) throw new ProtocolError(`payload ends ${start + count - this.buffer.length} bytes early`);
    this.offset += count;
    return start;
  }

  u8(): number {
    return this.buffer[this.take(1)]!;
  }

  u32(): number {
    return this.buffer.readUInt32LE(this.take(4));
  }

  /** A CK_ULONG. All ones is CK_UNAVAILABLE_INFORMATION; other values above 2^53 only come from garbage input. */
  ulong(): number {
    const value = this.buffer.readBigUInt64LE(this.take(8));
    return value === U64_ALL_ONES ? CK_UNAVAILABLE_INFORMATION : Number(value);
  }

  /** A view into the frame: copy it before keeping it beyond the request. */
  bytes(): Buffer {
    const length = this.u32();
    const start = this.take(length);
    return this.buffer.subarray(start, start + length);
  }

  out(): OutRequest {
    const present = this.u8() === 1;
    const capacity = this.ulong();
    return { present, capacity };
  }

  template(): Attribute[] {
    const count = this.u32();
    const attributes: Attribute[] = [];
    for (let i = 0; i < count; i++) attributes.push({ type: this.ulong(), value: this.bytes() });
    return attributes;
  }

  mechanism(): Mechanism {
    const type = this.ulong();
    const kind = this.u8();
    switch (kind) {
      case 0:
        return { type, parameter: { kind: "none" } };
      case 1:
        return { type, parameter: { kind: "bytes", data: this.bytes() } };
      case 2:
        return { type, parameter: { kind: "oaep", hashAlg: this.ulong(), mgf: this.ulong(), source: this.ulong(), sourceData: this.bytes() } };
      case 3:
        return { type, parameter: { kind: "malformed" } };
      case 4:
        return { type, parameter: { kind: "gcm", iv: this.bytes(), ivBits: this.ulong(), aad: this.bytes(), tagBits: this.ulong() } };
      default:
        throw new ProtocolError(`unknown mechanism parameter kind ${kind}`);
    }
  }

  /** MSGPARAM: the pParameter of C_EncryptMessage / C_DecryptMessage. */
  messageParameter(): MessageParameter {
    const kind = this.u8();
    switch (kind) {
      case 0:
        return { kind: "none" };
      case 1:
        return { kind: "gcm", iv: this.bytes(), ivFixedBits: this.ulong(), ivGenerator: this.ulong(), tag: this.bytes(), tagBits: this.ulong() };
      case 3:
        return { kind: "malformed" };
      default:
        throw new ProtocolError(`unknown message parameter kind ${kind}`);
    }
  }

  /** Trailing bytes mean the two sides disagree about the format. */
  end(): void {
    if (this.offset !== this.buffer.length) throw new ProtocolError(`${this.buffer.length - this.offset} unexpected trailing bytes`);
  }
}

export class Writer {
  private buffer: Buffer;
  private offset: number;

  constructor(initialSize = 256, reserve = 0) {
    this.buffer = Buffer.allocUnsafe(Math.max(initialSize, reserve));
    this.offset = reserve;
  }

  /** Reserves `count` bytes and returns their offset. It may replace this.buffer: call it before reading the field. */
  private room(count: number): number {
    const start = this.offset;
    if (start + count > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, start + count));
      this.buffer.copy(grown, 0, 0, start);
      this.buffer = grown;
    }
    this.offset += count;
    return start;
  }

  u8(value: number): this {
    const offset = this.room(1);
    this.buffer[offset] = value;
    return this;
  }

  u32(value: number): this {
    const offset = this.room(4);
    this.buffer.writeUInt32LE(value >>> 0, offset);
    return this;
  }

  ulong(value: number): this {
    const encoded = value === CK_UNAVAILABLE_INFORMATION ? U64_ALL_ONES : BigInt(value);
    const offset = this.room(8);
    this.buffer.writeBigUInt64LE(encoded, offset);
    return this;
  }

  bytes(value: Buffer | undefined): this {
    const data = value ?? EMPTY;
    this.u32(data.length);
    const offset = this.room(data.length);
    data.copy(this.buffer, offset);
    return this;
  }

  /** Exactly `size` bytes: `value` must already be blank-padded to that size. */
  fixed(value: Buffer, size: number): this {
    if (value.length !== size) throw new Error(`fixed field of ${size} bytes given ${value.length}`);
    const offset = this.room(size);
    value.copy(this.buffer, offset);
    return this;
  }

  version(major: number, minor: number): this {
    return this.u8(major).u8(minor);
  }

  ulongList(count: number, items: readonly number[]): this {
    this.ulong(count).u32(items.length);
    for (const item of items) this.ulong(item);
    return this;
  }

  /** Overwrites a u32 already written (frame lengths). */
  patchU32(position: number, value: number): void {
    this.buffer.writeUInt32LE(value >>> 0, position);
  }

  patchUlong(position: number, value: number): void {
    this.buffer.writeBigUInt64LE(value === CK_UNAVAILABLE_INFORMATION ? U64_ALL_ONES : BigInt(value), position);
  }

  get length(): number {
    return this.offset;
  }

  finish(): Buffer {
    return this.buffer.subarray(0, this.offset);
  }
}

const EMPTY = Buffer.alloc(0);

/** CK_UTF8CHAR[size]: UTF-8, cut at a character boundary, padded with blanks (never NULs, per the spec). */
export function blankPadded(text: string, size: number): Buffer {
  const out = Buffer.alloc(size, 0x20);
  let used = 0;
  for (const character of text) {
    const encoded = Buffer.from(character, "utf8");
    if (used + encoded.length > size) break;
    encoded.copy(out, used);
    used += encoded.length;
  }
  return out;
}
