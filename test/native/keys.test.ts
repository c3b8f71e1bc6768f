// The shim's side of key generation, wrapping and the v3.0 message API: what it sends (recorded by the fake
// helper, test/fixtures/fake-helper.mjs) and the buffer rules of docs/protocol.md for what comes back.
import test from "ava";
import { onlyDriverLines, runDriver, rv } from "./driver.ts";

const MECHANISM_INVALID = "0x70";
const MECHANISM_PARAM_INVALID = "0x71";
const UNTOUCHED_HANDLE = "0x4321";

/** The fake helper's record of the last request's decoded fields. */
function seen(values: Map<string, string>, key: string): Record<string, any> {
  const text = values.get(key);
  if (text === undefined) throw new Error(`no ${key} line`);
  // The driver prints the report from "seen": on; the report's closing brace follows.
  return JSON.parse(text.slice(0, -1)) as Record<string, any>;
}

const hex = (text: string): string => Buffer.from(text, "latin1").toString("hex");

test("C_GenerateKey, C_GenerateKeyPair, C_WrapKey and C_UnwrapKey: what travels and what is written back", async (t) => {
  const run = await runDriver("keys");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("done"), "1", run.stdout);

  // C_GenerateKey: mechanism and template as the caller laid them out; the handle only on CKR_OK.
  t.is(v.get("gk.ok"), rv.OK);
  t.is(v.get("gk.ok.handle"), "0x2001");
  const generated = seen(v, "gk.seen");
  t.deepEqual(generated.mechanism, { type: 0x1080, kind: 0 });
  const valueLen = Buffer.alloc(8);
  valueLen.writeBigUInt64LE(32n);
  t.deepEqual(generated.templates, [[{ type: 3, value: hex("k1") }, { type: 0x161, value: valueLen.toString("hex") }]]);
  t.is(v.get("gk.error"), MECHANISM_INVALID);
  t.is(v.get("gk.error.handle"), UNTOUCHED_HANDLE);
  t.is(v.get("gk.malformed"), rv.DEVICE_ERROR);
  t.is(v.get("gk.malformed.handle"), UNTOUCHED_HANDLE);
  t.regex(run.stderr, /AZURE_KEYVAULT: C_GenerateKey: protocol error/);
  t.is(v.get("gk.nullHandle"), rv.ARGUMENTS_BAD);
  t.is(v.get("gk.nullMech"), rv.ARGUMENTS_BAD);
  t.is(v.get("gk.nullTemplate"), rv.ARGUMENTS_BAD);

  // C_GenerateKeyPair: two templates in order; both handles or neither.
  t.is(v.get("gkp.ok"), rv.OK);
  t.is(v.get("gkp.ok.handles"), "0x1001,0x1002");
  const pair = seen(v, "gkp.seen");
  t.deepEqual(pair.mechanism, { type: 0x1040, kind: 0 });
  t.deepEqual(pair.templates, [
    [{ type: 0x180, value: "06082a8648ce3d030107" }],
    [{ type: 3, value: hex("pair") }, { type: 0x108, value: "01" }],
  ]);
  t.is(v.get("gkp.error"), MECHANISM_INVALID);
  t.is(v.get("gkp.error.handles"), `${UNTOUCHED_HANDLE},${UNTOUCHED_HANDLE}`);
  t.is(v.get("gkp.malformed"), rv.DEVICE_ERROR);
  t.is(v.get("gkp.malformed.handles"), `${UNTOUCHED_HANDLE},${UNTOUCHED_HANDLE}`);
  t.is(v.get("gkp.nullPublic"), rv.ARGUMENTS_BAD);
  t.is(v.get("gkp.nullPrivate"), rv.ARGUMENTS_BAD);
  t.is(v.get("gkp.nullTemplate"), rv.ARGUMENTS_BAD);

  // C_WrapKey: the OUT rules (length query, too small, full), the key-wrap IV as raw bytes (kind 1).
  t.is(v.get("wrap.query"), rv.OK);
  t.is(v.get("wrap.query.len"), "40");
  const wrap = seen(v, "wrap.seen");
  t.deepEqual(wrap.mechanism, { type: 0x2109, kind: 1, data: "a6".repeat(8) });
  t.deepEqual(wrap.wrap, { wrappingKey: 7, key: 9 });
  t.is(v.get("wrap.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("wrap.small.len"), "40");
  t.is(v.get("wrap.small.untouched"), "1");
  t.is(v.get("wrap.full"), rv.OK);
  t.is(v.get("wrap.full.value"), Buffer.from(Array.from({ length: 40 }, (_, i) => i + 9)).toString("hex"));
  // Data that differs from its length: nothing written, not even *pulLen.
  t.is(v.get("wrap.malformed"), rv.DEVICE_ERROR);
  t.is(v.get("wrap.malformed.len"), "64");
  t.is(v.get("wrap.malformed.untouched"), "1");
  t.is(v.get("wrap.nullLen"), rv.ARGUMENTS_BAD);
  t.is(v.get("wrap.nullMech"), rv.ARGUMENTS_BAD);

  // C_UnwrapKey: the wrapped bytes and the template travel; the handle only on CKR_OK of a well-formed reply.
  t.is(v.get("unwrap.ok"), rv.OK);
  t.is(v.get("unwrap.ok.handle"), "0x3018");
  const unwrap = seen(v, "unwrap.seen");
  t.is(unwrap.unwrappingKey, 7);
  t.deepEqual(unwrap.templates, [[{ type: 3, value: hex("k1") }]]);
  t.is(v.get("unwrap.error"), MECHANISM_INVALID);
  t.is(v.get("unwrap.error.handle"), UNTOUCHED_HANDLE);
  t.is(v.get("unwrap.garbage"), rv.DEVICE_ERROR);
  t.is(v.get("unwrap.garbage.handle"), UNTOUCHED_HANDLE);
  t.is(v.get("unwrap.nullHandle"), rv.ARGUMENTS_BAD);
  t.is(v.get("unwrap.nullWrapped"), rv.ARGUMENTS_BAD);

  // CK_GCM_PARAMS travels field by field (kind 4); a wrong size or a NULL pAAD with a length is malformed (kind 3).
  t.is(v.get("gcm.init"), rv.OK);
  t.deepEqual(seen(v, "gcm.seen").mechanism, { type: 0x1087, kind: 4, iv: "000102030405060708090a0b", ivBits: 96, aad: hex("hdr"), tagBits: 128 });
  t.deepEqual(seen(v, "gcm.short.seen").mechanism, { type: 0x1087, kind: 3 });
  t.deepEqual(seen(v, "gcm.nullAad.seen").mechanism, { type: 0x1087, kind: 3 });
  // Other parameters (a CBC IV) stay raw bytes.
  t.deepEqual(seen(v, "cbc.seen").mechanism, { type: 0x1085, kind: 1, data: "000102030405060708090a0b" });

  t.true(onlyDriverLines(run.stdout), run.stdout);
});

test("C_EncryptMessage and C_DecryptMessage: the GCM message parameter travels, IV and tag come back only with the ciphertext", async (t) => {
  const run = await runDriver("message");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("done"), "1", run.stdout);
  t.is(v.get("pre.EncryptMessage"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("enc.init"), rv.OK);
  t.is(v.get("enc.init.nullMech"), rv.ARGUMENTS_BAD);

  const untouchedTag = "00".repeat(16);
  const ciphertext = Buffer.from("attack at dawn").map((b) => b ^ 0x55);
  // A length query and a too-small buffer: the length, nothing in the IV, the tag or the buffer.
  t.is(v.get("enc.query"), rv.OK);
  t.is(v.get("enc.query.len"), "14");
  t.is(v.get("enc.query.ivUntouched"), "1");
  t.is(v.get("enc.query.tag"), untouchedTag);
  t.is(v.get("enc.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("enc.small.len"), "14");
  t.is(v.get("enc.small.ivUntouched"), "1");
  t.is(v.get("enc.small.tag"), untouchedTag);
  t.is(v.get("enc.small.out"), "-");

  // With output: ciphertext, the helper's IV (the caller's ^ 0xff) and its tag, all three.
  t.is(v.get("enc.full"), rv.OK);
  t.is(v.get("enc.full.len"), "14");
  t.is(v.get("enc.full.out"), Buffer.from(ciphertext).toString("hex"));
  t.is(v.get("enc.full.iv"), Buffer.from(Array.from({ length: 12 }, (_, i) => (0x10 + i) ^ 0xff)).toString("hex"));
  t.is(v.get("enc.full.tag"), "7a".repeat(16));
  t.deepEqual(seen(v, "enc.full.seen").messageParameter, {
    kind: 1,
    iv: "101112131415161718191a1b",
    ivFixedBits: 0,
    ivGenerator: 3,
    tag: untouchedTag,
    tagBits: 128,
  });

  // An IV or tag of the wrong length, or one sent with a length query: CKR_DEVICE_ERROR and nothing written.
  for (const key of ["enc.badIv", "enc.badTag", "enc.ivOnQuery"]) {
    t.is(v.get(key), rv.DEVICE_ERROR, key);
    t.is(v.get(`${key}.len`), key === "enc.ivOnQuery" ? "0" : "64", key);
    t.is(v.get(`${key}.ivUntouched`), "1", key);
    t.is(v.get(`${key}.tag`), untouchedTag, key);
    t.is(v.get(`${key}.out`), "-", key);
  }
  t.regex(run.stderr, /AZURE_KEYVAULT: C_EncryptMessage: protocol error: IV or tag of the wrong length/);
  t.is(v.get("enc.afterBad"), rv.OK);
  t.is(v.get("enc.afterBad.tag"), "7a".repeat(16));

  // Parameters the shim cannot read reach the helper as malformed, which judges them.
  t.is(v.get("enc.oddTagBits"), MECHANISM_PARAM_INVALID);
  t.deepEqual(seen(v, "enc.oddTagBits.seen").messageParameter, { kind: 3 });
  t.is(v.get("enc.nullIv"), MECHANISM_PARAM_INVALID);
  t.is(v.get("enc.shortParam"), MECHANISM_PARAM_INVALID);
  t.is(v.get("enc.nullParamWithLen"), MECHANISM_PARAM_INVALID);
  t.is(v.get("enc.noParam"), rv.OK);
  t.is(v.get("enc.noParam.len"), "1");
  t.deepEqual(seen(v, "enc.noParam.seen").messageParameter, { kind: 0 });
  t.is(v.get("enc.nullLen"), rv.ARGUMENTS_BAD);
  t.is(v.get("enc.nullAad"), rv.ARGUMENTS_BAD);
  t.is(v.get("enc.nullPlaintext"), rv.ARGUMENTS_BAD);
  t.is(v.get("enc.final"), rv.OK);

  t.is(v.get("dec.init"), rv.OK);
  t.is(v.get("dec.query"), rv.OK);
  t.is(v.get("dec.query.len"), "4");
  t.is(v.get("dec.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("dec.small.len"), "4");
  t.is(v.get("dec.small.untouched"), "1");
  t.is(v.get("dec.full"), rv.OK);
  t.is(v.get("dec.full.value"), "abcd");
  // A byte after the OUT: the reply is malformed and writes nothing.
  t.is(v.get("dec.garbage"), rv.DEVICE_ERROR);
  t.is(v.get("dec.garbage.len"), "32");
  t.is(v.get("dec.garbage.untouched"), "1");
  t.is(v.get("dec.nullLen"), rv.ARGUMENTS_BAD);
  t.is(v.get("dec.nullCiphertext"), rv.ARGUMENTS_BAD);
  t.is(v.get("dec.final"), rv.OK);

  // Multi-part message encryption is not offered.
  t.is(v.get("enc.begin"), rv.FUNCTION_NOT_SUPPORTED);
  t.is(v.get("dec.begin"), rv.FUNCTION_NOT_SUPPORTED);
  t.is(v.get("post.MessageEncryptFinal"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.true(onlyDriverLines(run.stdout), run.stdout);
});
