// Session secret keys (#11): C_GenerateKey CKM_AES_KEY_GEN with CKA_TOKEN false and C_CreateObject of a
// CKO_SECRET_KEY live in the helper only, encrypt and decrypt with node:crypto (never asking the HSM), show CKA_VALUE
// only when extractable and not sensitive, and go with their session. Every ciphertext is checked with node:crypto
// against the key's bytes as the test knows them (its own CKA_VALUE, or CKA_VALUE read once the template allows it).
import test from "ava";
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from "node:crypto";
import pkcs11js from "pkcs11js";
import { attribute, findObjects, requestsSince, rvOf, startModuleFixture, type Handle, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ managedHsm: true, keys: "aes256:oct-HSM:256,aes128:oct-HSM:128" });
});
test.after.always(() => fixture?.close());

const bool = (value: Buffer): boolean => value[0] === 1;
const ulong = (value: Buffer): number => (value.length === 8 ? Number(value.readBigUInt64LE(0)) : value.readUInt32LE(0));
const open = (name = "aes256"): Handle => fixture.pkcs11.C_OpenSession(fixture.key(name).slot, pkcs11js.CKF_SERIAL_SESSION);
const cbcPad = (iv: Buffer): pkcs11js.Mechanism => ({ mechanism: pkcs11js.CKM_AES_CBC_PAD, parameter: iv });
// CK_PARAMS_GCM: pkcs11js leaves CK_PARAMS_AES_GCM's ulIvBits uninitialised.
const gcm = (iv: Buffer, aad: Buffer, tagBits = 128): pkcs11js.Mechanism => ({ mechanism: pkcs11js.CKM_AES_GCM, parameter: { type: pkcs11js.CK_PARAMS_GCM, iv, aad, ivBits: iv.length * 8, tagBits } as pkcs11js.AesGCM });

function generate(s: Handle, extra: pkcs11js.Template, length = 32): Handle {
  return fixture.pkcs11.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: length },
    { type: pkcs11js.CKA_TOKEN, value: false },
    ...extra,
  ]);
}
const readable: pkcs11js.Template = [
  { type: pkcs11js.CKA_SENSITIVE, value: false },
  { type: pkcs11js.CKA_EXTRACTABLE, value: true },
];
function create(s: Handle, value: Buffer, extra: pkcs11js.Template = readable): Handle {
  return fixture.pkcs11.C_CreateObject(s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE, value },
    ...extra,
  ]);
}

function run(direction: "encrypt" | "decrypt", s: Handle, mechanism: pkcs11js.Mechanism, key: Handle, data: Buffer): Buffer {
  const { pkcs11 } = fixture;
  if (direction === "encrypt") {
    pkcs11.C_EncryptInit(s, mechanism, key);
    return pkcs11.C_Encrypt(s, data, Buffer.alloc(data.length + 32));
  }
  pkcs11.C_DecryptInit(s, mechanism, key);
  return pkcs11.C_Decrypt(s, data, Buffer.alloc(data.length + 32));
}

function nodeGcm(key: Buffer, iv: Buffer, aad: Buffer, data: Buffer, tagBytes = 16): Buffer {
  const cipher = createCipheriv(`aes-${key.length * 8}-gcm` as CipherGCMTypes, key, iv, { authTagLength: tagBytes });
  cipher.setAAD(aad);
  return Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
}
function nodeCbcPad(direction: "encrypt" | "decrypt", key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const cipher = (direction === "encrypt" ? createCipheriv : createDecipheriv)(`aes-${key.length * 8}-cbc`, key, iv);
  return Buffer.concat([cipher.update(data), cipher.final()]);
}

test.serial("a generated session key (CKA_TOKEN false) encrypts and decrypts locally as node:crypto does, without asking the HSM", async (t) => {
  const { pkcs11 } = fixture;
  const s = open();
  // The token's load probes the HSM key's size once: let it finish before counting.
  attribute(pkcs11, s, findObjects(pkcs11, s, [{ type: pkcs11js.CKA_TOKEN, value: true }])[0]!, pkcs11js.CKA_VALUE_LEN);
  const before = await fixture.emulator.requestCounts();
  for (const length of [16, 24, 32]) {
    const key = generate(s, readable, length);
    t.false(bool(attribute(pkcs11, s, key, pkcs11js.CKA_TOKEN)));
    t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_LOCAL)));
    t.is(ulong(attribute(pkcs11, s, key, pkcs11js.CKA_KEY_GEN_MECHANISM)), pkcs11js.CKM_AES_KEY_GEN);
    t.is(ulong(attribute(pkcs11, s, key, pkcs11js.CKA_VALUE_LEN)), length);
    const value = attribute(pkcs11, s, key, pkcs11js.CKA_VALUE);
    t.is(value.length, length);
    const iv = randomBytes(16);
    const data = randomBytes(37);
    const sealed = run("encrypt", s, cbcPad(iv), key, data);
    t.deepEqual(nodeCbcPad("decrypt", value, iv, sealed), data, `${length}: node decrypts the module's CBC_PAD`);
    t.deepEqual(run("decrypt", s, cbcPad(iv), key, nodeCbcPad("encrypt", value, iv, data)), data, `${length}: the module decrypts node's`);

    // GCM with the caller's IV is fine for a key that lives here; so is a shorter tag.
    const gcmIv = randomBytes(12);
    const aad = randomBytes(9);
    for (const tagBits of [128, 96]) {
      const out = run("encrypt", s, gcm(gcmIv, aad, tagBits), key, data);
      t.deepEqual(out, nodeGcm(value, gcmIv, aad, data, tagBits / 8), `${length}: GCM with a ${tagBits}-bit tag is node's`);
      t.deepEqual(run("decrypt", s, gcm(gcmIv, aad, tagBits), key, out), data);
      const tampered = Buffer.from(out);
      tampered[tampered.length - 1]! ^= 1;
      t.is(rvOf(() => run("decrypt", s, gcm(gcmIv, aad, tagBits), key, tampered)), pkcs11js.CKR_ENCRYPTED_DATA_INVALID, "a tampered tag");
      t.is(rvOf(() => run("decrypt", s, gcm(gcmIv, Buffer.concat([aad, Buffer.from("x")]), tagBits), key, out)), pkcs11js.CKR_ENCRYPTED_DATA_INVALID, "other AAD");
    }
    const badPad = createCipheriv(`aes-${length * 8}-cbc`, value, iv).setAutoPadding(false).update(Buffer.alloc(16));
    t.is(rvOf(() => run("decrypt", s, cbcPad(iv), key, badPad)), pkcs11js.CKR_ENCRYPTED_DATA_INVALID, "a zero pad byte");
  }
  t.deepEqual(requestsSince(before, await fixture.emulator.requestCounts()), {}, "session keys never reach the HSM");
  pkcs11.C_CloseSession(s);
});

test.serial("C_CreateObject of a CKO_SECRET_KEY with CKA_VALUE: its ciphertexts are node's with those bytes", (t) => {
  const { pkcs11 } = fixture;
  const s = open();
  const value = randomBytes(32);
  const key = create(s, value);
  t.deepEqual(attribute(pkcs11, s, key, pkcs11js.CKA_VALUE), value);
  t.false(bool(attribute(pkcs11, s, key, pkcs11js.CKA_LOCAL)), "a key given from outside is not local");
  const iv = randomBytes(12);
  const data = randomBytes(64);
  t.deepEqual(run("encrypt", s, gcm(iv, Buffer.alloc(0)), key, data), nodeGcm(value, iv, Buffer.alloc(0), data));
  const other = randomBytes(32);
  t.notDeepEqual(run("encrypt", s, gcm(iv, Buffer.alloc(0)), create(s, other), data), nodeGcm(value, iv, Buffer.alloc(0), data), "other bytes, another ciphertext");
  t.is(rvOf(() => create(s, randomBytes(20))), pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID, "20 bytes is no AES key");
  pkcs11.C_CloseSession(s);
});

test.serial("CKA_VALUE is readable only when the template made the key extractable and not sensitive", (t) => {
  const { pkcs11 } = fixture;
  const s = open();
  const value = randomBytes(16);
  const cases: Array<[string, pkcs11js.Template, boolean]> = [
    ["default (sensitive)", [], false],
    ["sensitive", [{ type: pkcs11js.CKA_SENSITIVE, value: true }], false],
    ["not sensitive, not extractable", [{ type: pkcs11js.CKA_SENSITIVE, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: false }], false],
    ["not sensitive, extractable", readable, true],
  ];
  for (const [what, template, shown] of cases) {
    for (const [how, key] of [["generated", generate(s, template, 16)], ["created", create(s, value, template)]] as const) {
      const rv = rvOf(() => attribute(pkcs11, s, key, pkcs11js.CKA_VALUE));
      t.is(rv, shown ? "ok" : pkcs11js.CKR_ATTRIBUTE_SENSITIVE, `${how}, ${what}`);
      if (shown && how === "created") t.deepEqual(attribute(pkcs11, s, key, pkcs11js.CKA_VALUE), value);
    }
  }
  // A sensitive generated key's bytes still come out wrapped, so its encryption can be checked by node too.
  const hidden = generate(s, [], 32);
  const kekValue = randomBytes(32);
  const wrapped = pkcs11.C_WrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, create(s, kekValue), hidden, Buffer.alloc(64));
  const unwrap = createDecipheriv("id-aes256-wrap", kekValue, Buffer.from("a6a6a6a6a6a6a6a6", "hex"));
  const hiddenValue = Buffer.concat([unwrap.update(wrapped), unwrap.final()]);
  const iv = randomBytes(16);
  const data = randomBytes(20);
  t.deepEqual(run("encrypt", s, cbcPad(iv), hidden, data), nodeCbcPad("encrypt", hiddenValue, iv, data));
  const unextractable = generate(s, [{ type: pkcs11js.CKA_EXTRACTABLE, value: false }], 32);
  t.is(rvOf(() => pkcs11.C_WrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, create(s, kekValue), unextractable, Buffer.alloc(64))), pkcs11js.CKR_KEY_UNEXTRACTABLE);
  pkcs11.C_CloseSession(s);
});

test.serial("a session key goes with its session and is invisible on another token", (t) => {
  const { pkcs11 } = fixture;
  const owner = open();
  const sibling = open();
  const elsewhere = open("aes128");
  const secretKeys = (s: Handle): Handle[] => findObjects(pkcs11, s, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_TOKEN, value: false }]);
  const key = generate(owner, readable);
  const value = attribute(pkcs11, owner, key, pkcs11js.CKA_VALUE);
  t.deepEqual(secretKeys(sibling).map((h) => h.toString("hex")), [key.toString("hex")], "another session of the token sees it");
  t.deepEqual(attribute(pkcs11, sibling, key, pkcs11js.CKA_VALUE), value);
  t.deepEqual(secretKeys(elsewhere), [], "another token does not");
  t.is(rvOf(() => attribute(pkcs11, elsewhere, key, pkcs11js.CKA_VALUE)), pkcs11js.CKR_OBJECT_HANDLE_INVALID);
  t.is(rvOf(() => pkcs11.C_EncryptInit(elsewhere, cbcPad(randomBytes(16)), key)), pkcs11js.CKR_KEY_HANDLE_INVALID);

  pkcs11.C_CloseSession(owner);
  t.deepEqual(secretKeys(sibling), [], "closing the owner's session destroys it");
  t.is(rvOf(() => attribute(pkcs11, sibling, key, pkcs11js.CKA_VALUE)), pkcs11js.CKR_OBJECT_HANDLE_INVALID);
  t.is(rvOf(() => pkcs11.C_EncryptInit(sibling, cbcPad(randomBytes(16)), key)), pkcs11js.CKR_KEY_HANDLE_INVALID);
  const kept = generate(sibling, readable);
  t.is(secretKeys(sibling).length, 1, "a key of the open session stays");
  t.is(rvOf(() => attribute(pkcs11, sibling, kept, pkcs11js.CKA_VALUE_LEN)), "ok");
  pkcs11.C_CloseSession(sibling);
  pkcs11.C_CloseSession(elsewhere);
});
