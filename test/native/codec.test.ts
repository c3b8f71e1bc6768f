// The helper's half of the shapes that keys.test.ts checks on the shim's side: GCM mechanism parameters (kind 4),
// MSGPARAM, and the replies of the key-management and message handlers (docs/protocol.md).
import test from "ava";
import { Reader, Writer } from "../../src/protocol/codec.ts";
import { FunctionId } from "../../src/protocol/functions.ts";
import { HANDLERS } from "../../src/helper/dispatch.ts";
import { CKR } from "../../src/pkcs11/constants.ts";

const CKM_AES_GCM = 0x1087;

test("Reader.mechanism decodes CK_GCM_PARAMS (kind 4) field by field", (t) => {
  const payload = new Writer().ulong(CKM_AES_GCM).u8(4).bytes(Buffer.from("0123456789ab")).ulong(96).bytes(Buffer.from("hdr")).ulong(128).finish();
  const reader = new Reader(payload);
  t.deepEqual(reader.mechanism(), {
    type: CKM_AES_GCM,
    parameter: { kind: "gcm", iv: Buffer.from("0123456789ab"), ivBits: 96, aad: Buffer.from("hdr"), tagBits: 128 },
  });
  reader.end();
  // A truncated GCM parameter is a protocol error, not a partial struct.
  t.throws(() => new Reader(payload.subarray(0, payload.length - 4)).mechanism(), { name: "ProtocolError" });
});

test("Reader.messageParameter decodes none, GCM and malformed, and refuses unknown kinds", (t) => {
  t.deepEqual(new Reader(Buffer.from([0])).messageParameter(), { kind: "none" });
  t.deepEqual(new Reader(Buffer.from([3])).messageParameter(), { kind: "malformed" });
  const gcm = new Writer().u8(1).bytes(Buffer.alloc(12, 7)).ulong(32).ulong(2).bytes(Buffer.alloc(16)).ulong(128).finish();
  const reader = new Reader(gcm);
  t.deepEqual(reader.messageParameter(), { kind: "gcm", iv: Buffer.alloc(12, 7), ivFixedBits: 32, ivGenerator: 2, tag: Buffer.alloc(16), tagBits: 128 });
  reader.end();
  t.throws(() => new Reader(Buffer.from([2])).messageParameter(), { name: "ProtocolError" });
});

function encode(functionId: number, result: unknown, args: unknown): string {
  const writer = new Writer();
  HANDLERS.get(functionId)!.encode(writer, result, args);
  return Buffer.from(writer.finish()).toString("hex");
}

const u64 = (value: number): string => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  return b.toString("hex");
};
const bytes = (data: Buffer): string => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(data.length);
  return b.toString("hex") + data.toString("hex");
};

test("C_EncryptMessage replies carry the IV and tag only with the ciphertext", (t) => {
  const iv = Buffer.alloc(12, 1);
  const tag = Buffer.alloc(16, 2);
  const data = Buffer.from("ciphertext");
  const withOutput = { out: { present: true, capacity: 64 } };
  t.is(encode(FunctionId.C_EncryptMessage, { rv: CKR.OK, length: data.length, data, iv, tag }, withOutput), bytes(iv) + bytes(tag) + u64(data.length) + bytes(data));
  // A length query, CKR_BUFFER_TOO_SMALL and a failed call: empty IV and tag, whatever the result holds.
  const empty = bytes(Buffer.alloc(0));
  t.is(encode(FunctionId.C_EncryptMessage, { rv: CKR.OK, length: 10, iv, tag }, { out: { present: false, capacity: 0 } }), empty + empty + u64(10) + empty);
  t.is(encode(FunctionId.C_EncryptMessage, { rv: CKR.BUFFER_TOO_SMALL, length: 10, iv, tag }, { out: { present: true, capacity: 2 } }), empty + empty + u64(10) + empty);
  t.is(encode(FunctionId.C_EncryptMessage, undefined, withOutput), empty + empty + u64(0) + empty);
});

test("key-management replies have their full shape whatever happened", (t) => {
  t.is(encode(FunctionId.C_GenerateKeyPair, { publicHandle: 5, privateHandle: 6 }, undefined), u64(5) + u64(6));
  t.is(encode(FunctionId.C_GenerateKeyPair, undefined, undefined), u64(0) + u64(0));
  t.is(encode(FunctionId.C_GenerateKey, undefined, undefined), u64(0));
  t.is(encode(FunctionId.C_UnwrapKey, 9, undefined), u64(9));
  const wrapped = Buffer.alloc(40, 3);
  t.is(encode(FunctionId.C_WrapKey, { rv: CKR.OK, length: 40, data: wrapped }, undefined), u64(40) + bytes(wrapped));
  t.is(encode(FunctionId.C_DecryptMessage, undefined, undefined), u64(0) + bytes(Buffer.alloc(0)));
});
