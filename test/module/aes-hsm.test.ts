// Managed HSM AES keys through the module (#11): CKO_SECRET_KEY objects on per-key slots and on a vault token,
// CKM_AES_CBC / CKM_AES_CBC_PAD / CKM_AES_GCM in the HSM, CKM_AES_KEY_WRAP(_KWP) and RSA-OAEP wrapping, and
// C_GenerateKey of an oct-HSM key. Every ciphertext and wrapped key is checked with node:crypto against the key bytes
// the emulator exposes to tests (the REST API never returns them), never by the module itself.
import test from "ava";
import { constants, createCipheriv, createDecipheriv, publicEncrypt, randomBytes } from "node:crypto";
import pkcs11js from "pkcs11js";
import { attribute, findObjects, findOne, oaepParams, requestsSince, rvOf, startModuleFixture, type Handle, type ModuleFixture } from "./harness.ts";

const CKM_AES_KEY_WRAP_KWP = 0x210b;
const KW_IV = Buffer.from("a6a6a6a6a6a6a6a6", "hex");
const KWP_IV = Buffer.from("a65959a6", "hex");
const ENC_ONLY = "aes-enc-only";

// pkcs11js's C_Encrypt returns `output.subarray(0, length)`; its native base class returns the CK_ULONG itself, and a
// zero-length Buffer reaches the module as a NULL pointer (a length query).
type RawOutputCall = (this: pkcs11js.PKCS11, session: Handle, input: Buffer, output: Buffer) => number;
type RawFinalCall = (this: pkcs11js.PKCS11, session: Handle, output: Buffer) => number;
const native = Object.getPrototypeOf(pkcs11js.PKCS11.prototype) as { C_Encrypt: RawOutputCall; C_Decrypt: RawOutputCall; C_EncryptFinal: RawFinalCall; C_DecryptFinal: RawFinalCall };
const NULL_OUTPUT = Buffer.alloc(0);

let fixture: ModuleFixture;
let vaultSlot: Handle;
test.before(async () => {
  fixture = await startModuleFixture({
    managedHsm: true,
    keys: "aes256:oct-HSM:256,aes128:oct-HSM:128,rsa:RSA-HSM:2048",
    // A key whose key_ops allow no wrapping.
    prepare: async (_emulator, { vaultPost }) => {
      const created = await vaultPost(`/keys/${ENC_ONLY}/create?api-version=7.4`, { kty: "oct-HSM", key_size: 256, key_ops: ["encrypt", "decrypt"] });
      if (created.status !== 200) throw new Error(`create ${ENC_ONLY}: ${created.status}`);
      return [ENC_ONLY];
    },
    extraSlots: [{ label: "hsm" }],
  });
  vaultSlot = fixture.pkcs11.C_GetSlotList(true)[fixture.keys.size]!;
});
test.after.always(() => fixture?.close());

const ulong = (value: Buffer): number => (value.length === 8 ? Number(value.readBigUInt64LE(0)) : value.readUInt32LE(0));
const bool = (value: Buffer): boolean => value[0] === 1;

function session(slot: Handle, readWrite = false): Handle {
  return fixture.pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | (readWrite ? pkcs11js.CKF_RW_SESSION : 0));
}
const secretKeyOn = (s: Handle, label?: string): Handle =>
  findOne(fixture.pkcs11, s, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, ...(label ? [{ type: pkcs11js.CKA_LABEL, value: label }] : [])]);

/** A session on the key's own per-key slot and its secret key object. */
function hsmKey(name = "aes256"): { s: Handle; key: Handle } {
  const s = session(fixture.key(name).slot);
  return { s, key: secretKeyOn(s) };
}

const cbc = (iv: Buffer, pad: boolean): pkcs11js.Mechanism => ({ mechanism: pad ? pkcs11js.CKM_AES_CBC_PAD : pkcs11js.CKM_AES_CBC, parameter: iv });
// CK_PARAMS_GCM, not CK_PARAMS_AES_GCM: pkcs11js leaves the latter's ulIvBits uninitialised (malloc'd garbage).
const gcm = (iv: Buffer, aad: Buffer, tagBits = 128): pkcs11js.Mechanism => ({ mechanism: pkcs11js.CKM_AES_GCM, parameter: { type: pkcs11js.CK_PARAMS_GCM, iv, aad, ivBits: iv.length * 8, tagBits } as pkcs11js.AesGCM });

function nodeCbc(direction: "encrypt" | "decrypt", key: Buffer, iv: Buffer, pad: boolean, data: Buffer): Buffer {
  const name = `aes-${key.length * 8}-cbc`;
  const cipher = direction === "encrypt" ? createCipheriv(name, key, iv) : createDecipheriv(name, key, iv);
  cipher.setAutoPadding(pad);
  return Buffer.concat([cipher.update(data), cipher.final()]);
}

function encryptOnce(s: Handle, mechanism: pkcs11js.Mechanism, key: Handle, data: Buffer): Buffer {
  fixture.pkcs11.C_EncryptInit(s, mechanism, key);
  return fixture.pkcs11.C_Encrypt(s, data, Buffer.alloc(data.length + 32));
}
function decryptOnce(s: Handle, mechanism: pkcs11js.Mechanism, key: Handle, data: Buffer): Buffer {
  fixture.pkcs11.C_DecryptInit(s, mechanism, key);
  return fixture.pkcs11.C_Decrypt(s, data, Buffer.alloc(data.length + 32));
}
function encryptParts(s: Handle, mechanism: pkcs11js.Mechanism, key: Handle, parts: Buffer[]): Buffer {
  fixture.pkcs11.C_EncryptInit(s, mechanism, key);
  const out = parts.map((part) => fixture.pkcs11.C_EncryptUpdate(s, part, Buffer.alloc(part.length + 32)));
  out.push(fixture.pkcs11.C_EncryptFinal(s, Buffer.alloc(4096)));
  return Buffer.concat(out);
}
function decryptParts(s: Handle, mechanism: pkcs11js.Mechanism, key: Handle, parts: Buffer[]): Buffer {
  fixture.pkcs11.C_DecryptInit(s, mechanism, key);
  const out = parts.map((part) => fixture.pkcs11.C_DecryptUpdate(s, part, Buffer.alloc(part.length + 32)));
  out.push(fixture.pkcs11.C_DecryptFinal(s, Buffer.alloc(4096)));
  return Buffer.concat(out);
}

/** A session key the test knows the bytes of: extractable, not sensitive. */
function sessionKey(s: Handle, value: Buffer, keyType = pkcs11js.CKK_AES): Handle {
  return fixture.pkcs11.C_CreateObject(s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: keyType },
    { type: pkcs11js.CKA_VALUE, value },
    { type: pkcs11js.CKA_SENSITIVE, value: false },
    { type: pkcs11js.CKA_EXTRACTABLE, value: true },
  ]);
}
const unwrapTemplate = (keyType = pkcs11js.CKK_AES): pkcs11js.Template => [
  { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
  { type: pkcs11js.CKA_KEY_TYPE, value: keyType },
  { type: pkcs11js.CKA_SENSITIVE, value: false },
  { type: pkcs11js.CKA_EXTRACTABLE, value: true },
];

function flip(data: Buffer, index: number): Buffer {
  const copy = Buffer.from(data);
  copy[index < 0 ? copy.length + index : index]! ^= 0x01;
  return copy;
}

// ---- 1. objects -------------------------------------------------------------------------------------------

test.serial("a Managed HSM AES key is a sensitive, unextractable CKO_SECRET_KEY with CKA_VALUE_LEN from a probe, on its slot and on the vault token", async (t) => {
  const { pkcs11 } = fixture;
  const vault = session(vaultSlot);
  const onVault = findObjects(pkcs11, vault, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }]);
  t.is(onVault.length, 3, "the vault token shows each of the three AES keys");
  for (const name of ["aes256", "aes128", ENC_ONLY]) {
    const bytes = await fixture.emulator.octKeyBytes(name);
    const tags = ((await fixture.vaultGet(`/keys/${name}?api-version=7.4`)).body as { tags?: Record<string, string> }).tags ?? {};
    t.false("p11_secret_CKA_VALUE_LEN" in tags, `${name} carries no size tag: its size must come from a probe`);
    const perKey = session(fixture.key(name).slot);
    for (const [where, s, key] of [["per-key slot", perKey, secretKeyOn(perKey)], ["vault token", vault, secretKeyOn(vault, name)]] as const) {
      const what = `${name} on the ${where}`;
      t.is(ulong(attribute(pkcs11, s, key, pkcs11js.CKA_CLASS)), pkcs11js.CKO_SECRET_KEY, what);
      t.is(ulong(attribute(pkcs11, s, key, pkcs11js.CKA_KEY_TYPE)), pkcs11js.CKK_AES, what);
      t.is(ulong(attribute(pkcs11, s, key, pkcs11js.CKA_VALUE_LEN)), bytes.length, `${what}: CKA_VALUE_LEN is the emulator's key length`);
      t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_SENSITIVE)), what);
      t.false(bool(attribute(pkcs11, s, key, pkcs11js.CKA_EXTRACTABLE)), what);
      t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_TOKEN)), what);
      t.is(rvOf(() => attribute(pkcs11, s, key, pkcs11js.CKA_VALUE)), pkcs11js.CKR_ATTRIBUTE_SENSITIVE, `${what}: CKA_VALUE is never readable`);
      const wraps = name !== ENC_ONLY;
      t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_ENCRYPT)), what);
      t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_DECRYPT)), what);
      t.is(bool(attribute(pkcs11, s, key, pkcs11js.CKA_WRAP)), wraps, `${what}: CKA_WRAP from key_ops`);
      t.is(bool(attribute(pkcs11, s, key, pkcs11js.CKA_UNWRAP)), wraps, `${what}: CKA_UNWRAP from key_ops`);
    }
    pkcs11.C_CloseSession(perKey);
  }
  pkcs11.C_CloseSession(vault);
});

// ---- 2. CBC and CBC_PAD -----------------------------------------------------------------------------------

for (const name of ["aes256", "aes128"]) {
  test.serial(`CKM_AES_CBC_PAD and CKM_AES_CBC with ${name}: single- and multi-part, both ways against node:crypto`, async (t) => {
    const bytes = await fixture.emulator.octKeyBytes(name);
    const { s, key } = hsmKey(name);
    const iv = randomBytes(16);
    const odd = randomBytes(45);
    const blocks = randomBytes(64);

    const padded = encryptOnce(s, cbc(iv, true), key, odd);
    t.deepEqual(padded, nodeCbc("encrypt", bytes, iv, true, odd), "CBC_PAD: the HSM's ciphertext is node's");
    t.deepEqual(nodeCbc("decrypt", bytes, iv, true, padded), odd);
    t.deepEqual(encryptParts(s, cbc(iv, true), key, [odd.subarray(0, 7), odd.subarray(7, 30), odd.subarray(30)]), padded, "multi-part gives the same");
    const nodePadded = nodeCbc("encrypt", bytes, iv, true, blocks);
    t.deepEqual(decryptOnce(s, cbc(iv, true), key, nodePadded), blocks, "node's CBC_PAD ciphertext decrypts in the HSM");
    t.deepEqual(decryptParts(s, cbc(iv, true), key, [nodePadded.subarray(0, 5), nodePadded.subarray(5, 48), nodePadded.subarray(48)]), blocks);
    t.notDeepEqual(decryptOnce(s, cbc(flip(iv, 0), true), key, nodePadded), blocks, "another IV gives another plaintext");

    const plain = encryptOnce(s, cbc(iv, false), key, blocks);
    t.deepEqual(plain, nodeCbc("encrypt", bytes, iv, false, blocks), "CBC: the HSM's ciphertext is node's");
    t.deepEqual(encryptParts(s, cbc(iv, false), key, [blocks.subarray(0, 20), blocks.subarray(20)]), plain);
    t.deepEqual(decryptOnce(s, cbc(iv, false), key, plain), blocks);
    t.deepEqual(decryptParts(s, cbc(iv, false), key, [plain.subarray(0, 33), plain.subarray(33)]), blocks);
    const tampered = decryptOnce(s, cbc(iv, false), key, flip(plain, 20));
    t.notDeepEqual(tampered, blocks, "a tampered CBC ciphertext does not give the plaintext");
    t.deepEqual(tampered, nodeCbc("decrypt", bytes, iv, false, flip(plain, 20)), "it gives what node gives");
    fixture.pkcs11.C_CloseSession(s);
  });
}

test.serial("CBC errors: a bad pad is CKR_ENCRYPTED_DATA_INVALID, a short IV CKR_MECHANISM_PARAM_INVALID, a partial block CKR_DATA_LEN_RANGE", async (t) => {
  const { pkcs11 } = fixture;
  const bytes = await fixture.emulator.octKeyBytes("aes256");
  const { s, key } = hsmKey();
  const iv = randomBytes(16);
  // The last plaintext block ends in 0x00 (never a valid PKCS#7 pad) or 0x11 (longer than a block).
  for (const last of [0x00, 0x11]) {
    const block = randomBytes(32);
    block[31] = last;
    const badPad = nodeCbc("encrypt", bytes, iv, false, block);
    t.deepEqual(nodeCbc("decrypt", bytes, iv, false, badPad), block, "the twin without padding decrypts");
    pkcs11.C_DecryptInit(s, cbc(iv, true), key);
    t.is(rvOf(() => pkcs11.C_Decrypt(s, badPad, Buffer.alloc(64))), pkcs11js.CKR_ENCRYPTED_DATA_INVALID, `pad byte 0x${last.toString(16)}`);
    pkcs11.C_DecryptInit(s, cbc(iv, true), key);
    pkcs11.C_DecryptUpdate(s, badPad, Buffer.alloc(64));
    t.is(rvOf(() => pkcs11.C_DecryptFinal(s, Buffer.alloc(64))), pkcs11js.CKR_ENCRYPTED_DATA_INVALID, "multi-part too");
  }
  for (const length of [0, 8, 15, 17, 32]) {
    t.is(rvOf(() => pkcs11.C_EncryptInit(s, cbc(randomBytes(length), true), key)), pkcs11js.CKR_MECHANISM_PARAM_INVALID, `CBC_PAD IV of ${length} bytes`);
    t.is(rvOf(() => pkcs11.C_DecryptInit(s, cbc(randomBytes(length), false), key)), pkcs11js.CKR_MECHANISM_PARAM_INVALID, `CBC IV of ${length} bytes`);
  }
  t.is(rvOf(() => encryptOnce(s, cbc(iv, true), key, randomBytes(8))), "ok", "the twin with a 16-byte IV works");
  pkcs11.C_EncryptInit(s, cbc(iv, false), key);
  t.is(rvOf(() => pkcs11.C_Encrypt(s, randomBytes(33), Buffer.alloc(64))), pkcs11js.CKR_DATA_LEN_RANGE);
  pkcs11.C_EncryptInit(s, cbc(iv, false), key);
  pkcs11.C_EncryptUpdate(s, randomBytes(20), Buffer.alloc(64));
  t.is(rvOf(() => pkcs11.C_EncryptFinal(s, Buffer.alloc(64))), pkcs11js.CKR_DATA_LEN_RANGE, "multi-part: the whole input counts");
  pkcs11.C_CloseSession(s);
});

test.serial("a length query and CKR_BUFFER_TOO_SMALL keep the operation, and the answer is node's ciphertext", async (t) => {
  const { pkcs11 } = fixture;
  const bytes = await fixture.emulator.octKeyBytes("aes256");
  const { s, key } = hsmKey();
  const iv = randomBytes(16);
  const data = randomBytes(40);
  const expected = nodeCbc("encrypt", bytes, iv, true, data);
  pkcs11.C_EncryptInit(s, cbc(iv, true), key);
  t.is(native.C_Encrypt.call(pkcs11, s, data, NULL_OUTPUT), 48, "a NULL output gets the exact length");
  const before = await fixture.emulator.requestCounts("aes256");
  t.is(rvOf(() => pkcs11.C_Encrypt(s, data, Buffer.alloc(47))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  t.deepEqual(pkcs11.C_Encrypt(s, data, Buffer.alloc(48)), expected, "the operation is still there");
  t.deepEqual(requestsSince(before, await fixture.emulator.requestCounts("aes256")), { encrypt: 1 }, "the retry gets the kept answer: one HSM request");
  t.is(rvOf(() => pkcs11.C_Encrypt(s, data, Buffer.alloc(48))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED, "and ends with the answer");

  pkcs11.C_DecryptInit(s, cbc(iv, true), key);
  t.true(native.C_Decrypt.call(pkcs11, s, expected, NULL_OUTPUT) >= data.length, "the length of a padded plaintext is at most the ciphertext's");
  t.is(rvOf(() => pkcs11.C_Decrypt(s, expected, Buffer.alloc(39))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  t.deepEqual(pkcs11.C_Decrypt(s, expected, Buffer.alloc(40)), data);

  // Multi-part: the finishing call answers the query and the short buffer the same way.
  pkcs11.C_EncryptInit(s, cbc(iv, true), key);
  t.is(pkcs11.C_EncryptUpdate(s, data.subarray(0, 17), Buffer.alloc(64)).length, 0, "Update gathers");
  pkcs11.C_EncryptUpdate(s, data.subarray(17), Buffer.alloc(64));
  t.is(native.C_EncryptFinal.call(pkcs11, s, NULL_OUTPUT), 48);
  t.is(rvOf(() => pkcs11.C_EncryptFinal(s, Buffer.alloc(16))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  t.deepEqual(pkcs11.C_EncryptFinal(s, Buffer.alloc(48)), expected);
  pkcs11.C_DecryptInit(s, cbc(iv, true), key);
  pkcs11.C_DecryptUpdate(s, expected.subarray(0, 20), Buffer.alloc(64));
  pkcs11.C_DecryptUpdate(s, expected.subarray(20), Buffer.alloc(64));
  t.true(native.C_DecryptFinal.call(pkcs11, s, NULL_OUTPUT) >= data.length);
  t.is(rvOf(() => pkcs11.C_DecryptFinal(s, Buffer.alloc(8))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  t.deepEqual(pkcs11.C_DecryptFinal(s, Buffer.alloc(48)), data);
  t.is(rvOf(() => pkcs11.C_DecryptFinal(s, Buffer.alloc(48))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  pkcs11.C_CloseSession(s);
});

// ---- 3. GCM (v2.40 calls; the message API is in aes-message.test.ts) ---------------------------------------

test.serial("CKM_AES_GCM: C_Decrypt of node's ciphertext||tag with the caller's IV and AAD; a tampered tag, AAD or ciphertext is CKR_ENCRYPTED_DATA_INVALID", async (t) => {
  const { pkcs11 } = fixture;
  for (const name of ["aes256", "aes128"]) {
    const bytes = await fixture.emulator.octKeyBytes(name);
    const { s, key } = hsmKey(name);
    const iv = randomBytes(12);
    const aad = Buffer.from("header the HSM authenticates");
    const data = randomBytes(50);
    const cipher = createCipheriv(`aes-${bytes.length * 8}-gcm` as "aes-256-gcm", bytes, iv);
    cipher.setAAD(aad);
    const sealed = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
    t.deepEqual(decryptOnce(s, gcm(iv, aad), key, sealed), data, `${name}: single-part`);
    t.deepEqual(decryptParts(s, gcm(iv, aad), key, [sealed.subarray(0, 10), sealed.subarray(10, 60), sealed.subarray(60)]), data, `${name}: multi-part`);
    for (const [what, mechanism, input] of [
      ["tag", gcm(iv, aad), flip(sealed, -1)],
      ["AAD", gcm(iv, flip(aad, 3)), sealed],
      ["ciphertext", gcm(iv, aad), flip(sealed, 0)],
      ["IV", gcm(flip(iv, 0), aad), sealed],
    ] as const) {
      pkcs11.C_DecryptInit(s, mechanism, key);
      t.is(rvOf(() => pkcs11.C_Decrypt(s, input, Buffer.alloc(128))), pkcs11js.CKR_ENCRYPTED_DATA_INVALID, `${name}: tampered ${what}`);
    }
    pkcs11.C_CloseSession(s);
  }
});

test.serial("CKM_AES_GCM C_EncryptInit with an HSM key is CKR_MECHANISM_PARAM_INVALID (the HSM picks the IV), and sends nothing", async (t) => {
  const { pkcs11 } = fixture;
  const { s, key } = hsmKey();
  const before = await fixture.emulator.requestCounts("aes256");
  t.is(rvOf(() => pkcs11.C_EncryptInit(s, gcm(randomBytes(12), Buffer.alloc(0)), key)), pkcs11js.CKR_MECHANISM_PARAM_INVALID);
  t.is(rvOf(() => pkcs11.C_Encrypt(s, randomBytes(16), Buffer.alloc(64))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED, "no operation was started");
  t.deepEqual(requestsSince(before, await fixture.emulator.requestCounts("aes256")), {});
  t.is(rvOf(() => pkcs11.C_DecryptInit(s, gcm(randomBytes(12), Buffer.alloc(0), 96), key)), pkcs11js.CKR_MECHANISM_PARAM_INVALID, "a 96-bit tag is not the HSM's");
  t.is(rvOf(() => pkcs11.C_DecryptInit(s, gcm(randomBytes(12), Buffer.alloc(0)), key)), "ok", "its 128-bit twin is taken");
  pkcs11.C_CloseSession(s);
});

// ---- 5. wrapping ------------------------------------------------------------------------------------------

for (const [mechanism, what] of [[pkcs11js.CKM_AES_KEY_WRAP, "CKM_AES_KEY_WRAP"], [CKM_AES_KEY_WRAP_KWP, "CKM_AES_KEY_WRAP_KWP"]] as const) {
  test.serial(`${what} with the HSM key: a session key wrapped through the module unwraps with node's id-aes-wrap, and node's wrap unwraps through the module`, async (t) => {
    const { pkcs11 } = fixture;
    const kwp = mechanism === CKM_AES_KEY_WRAP_KWP;
    for (const name of ["aes256", "aes128"]) {
      const kek = await fixture.emulator.octKeyBytes(name);
      const nodeName = `id-aes${kek.length * 8}-wrap${kwp ? "-pad" : ""}`;
      const iv = kwp ? KWP_IV : KW_IV;
      const { s, key } = hsmKey(name);
      // KWP also wraps what RFC 3394 cannot: a 20-byte generic secret.
      const values: Array<[Buffer, number]> = [[randomBytes(32), pkcs11js.CKK_AES], [randomBytes(16), pkcs11js.CKK_AES], ...(kwp ? [[randomBytes(20), pkcs11js.CKK_GENERIC_SECRET] as [Buffer, number]] : [])];
      for (const [value, keyType] of values) {
        const label = `${name} ${value.length} bytes`;
        const wrapped = pkcs11.C_WrapKey(s, { mechanism }, key, sessionKey(s, value, keyType), Buffer.alloc(128));
        const decipher = createDecipheriv(nodeName, kek, iv);
        t.deepEqual(Buffer.concat([decipher.update(wrapped), decipher.final()]), value, `${label}: node unwraps the module's wrap`);
        t.throws(() => {
          const tampered = createDecipheriv(nodeName, kek, iv);
          Buffer.concat([tampered.update(flip(wrapped, 5)), tampered.final()]);
        }, undefined, `${label}: a tampered wrap does not unwrap in node either`);

        const cipher = createCipheriv(nodeName, kek, iv);
        const nodeWrapped = Buffer.concat([cipher.update(value), cipher.final()]);
        const unwrapped = pkcs11.C_UnwrapKey(s, { mechanism }, key, nodeWrapped, unwrapTemplate(keyType));
        t.deepEqual(attribute(pkcs11, s, unwrapped, pkcs11js.CKA_VALUE), value, `${label}: node's wrap unwraps in the module`);
        t.false(bool(attribute(pkcs11, s, unwrapped, pkcs11js.CKA_TOKEN)), "the unwrapped key is a session key");
        t.is(rvOf(() => pkcs11.C_UnwrapKey(s, { mechanism }, key, flip(nodeWrapped, 3), unwrapTemplate(keyType))), pkcs11js.CKR_WRAPPED_KEY_INVALID, `${label}: tampered`);
      }
      if (!kwp) t.is(rvOf(() => pkcs11.C_WrapKey(s, { mechanism }, key, sessionKey(s, randomBytes(20), pkcs11js.CKK_GENERIC_SECRET), Buffer.alloc(128))), pkcs11js.CKR_KEY_SIZE_RANGE, "RFC 3394 wraps whole 8-byte blocks only");
      pkcs11.C_CloseSession(s);
    }
  });
}

test.serial("C_UnwrapKey takes a template that states CKA_VALUE_LEN (as SunPKCS11 and pkcs11-tool send it), and refuses one that contradicts the key", async (t) => {
  const { pkcs11 } = fixture;
  const kek = await fixture.emulator.octKeyBytes("aes256");
  const { s, key } = hsmKey();
  for (const length of [32, 24, 16]) {
    const value = randomBytes(length);
    const cipher = createCipheriv("id-aes256-wrap", kek, KW_IV);
    const wrapped = Buffer.concat([cipher.update(value), cipher.final()]);
    const stated = (valueLen: number): pkcs11js.Template => [...unwrapTemplate(), { type: pkcs11js.CKA_VALUE_LEN, value: valueLen }];
    const unwrapped = pkcs11.C_UnwrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, key, wrapped, stated(length));
    t.deepEqual(attribute(pkcs11, s, unwrapped, pkcs11js.CKA_VALUE), value, `CKA_VALUE_LEN ${length}`);
    t.is(ulong(attribute(pkcs11, s, unwrapped, pkcs11js.CKA_VALUE_LEN)), length);
    const wrong = length === 16 ? 32 : 16;
    t.is(rvOf(() => pkcs11.C_UnwrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, key, wrapped, stated(wrong))), pkcs11js.CKR_TEMPLATE_INCONSISTENT, `a ${length}-byte key stated as ${wrong}`);
  }
  pkcs11.C_CloseSession(s);
});

test.serial("RSA-OAEP (SHA-1 and SHA-256) and RSA1_5: node's wrap with the vault key's JWK public key unwraps in the module to the same bytes; tampered is CKR_WRAPPED_KEY_INVALID", (t) => {
  const { pkcs11 } = fixture;
  const s = session(fixture.key("rsa").slot);
  const privateKey = findOne(pkcs11, s, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }]);
  for (const [hash, hashAlg, mgf] of [["sha1", pkcs11js.CKM_SHA_1, pkcs11js.CKG_MGF1_SHA1], ["sha256", pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256]] as const) {
    const value = randomBytes(32);
    const wrapped = publicEncrypt({ key: fixture.key("rsa").publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, value);
    const mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: oaepParams(hashAlg, mgf) };
    const unwrapped = pkcs11.C_UnwrapKey(s, mechanism, privateKey, wrapped, unwrapTemplate());
    t.deepEqual(attribute(pkcs11, s, unwrapped, pkcs11js.CKA_VALUE), value, hash);
    t.is(rvOf(() => pkcs11.C_UnwrapKey(s, mechanism, privateKey, flip(wrapped, 100), unwrapTemplate())), pkcs11js.CKR_WRAPPED_KEY_INVALID, `${hash}: tampered`);
  }
  // CKM_RSA_PKCS (the vault's RSA1_5) too.
  const value = randomBytes(16);
  const wrapped = publicEncrypt({ key: fixture.key("rsa").publicKey, padding: constants.RSA_PKCS1_PADDING }, value);
  t.deepEqual(attribute(pkcs11, s, pkcs11.C_UnwrapKey(s, { mechanism: pkcs11js.CKM_RSA_PKCS }, privateKey, wrapped, unwrapTemplate()), pkcs11js.CKA_VALUE), value, "RSA1_5");
  t.is(rvOf(() => pkcs11.C_UnwrapKey(s, { mechanism: pkcs11js.CKM_RSA_PKCS }, privateKey, Buffer.alloc(wrapped.length, 0xff), unwrapTemplate())), pkcs11js.CKR_WRAPPED_KEY_INVALID, "RSA1_5: a value above the modulus (a flipped bit could still unpad, once in ~65536)");
  pkcs11.C_CloseSession(s);
});

test.serial("a vault key is never wrapped out (CKR_KEY_UNEXTRACTABLE), and key_ops without wrapKey/unwrapKey give CKR_KEY_FUNCTION_NOT_PERMITTED with no HSM request", async (t) => {
  const { pkcs11 } = fixture;
  const vault = session(vaultSlot);
  const kek = secretKeyOn(vault, "aes256");
  t.is(rvOf(() => pkcs11.C_WrapKey(vault, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, kek, secretKeyOn(vault, "aes128"), Buffer.alloc(128))), pkcs11js.CKR_KEY_UNEXTRACTABLE);
  t.is(rvOf(() => pkcs11.C_WrapKey(vault, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, kek, sessionKey(vault, randomBytes(16)), Buffer.alloc(128))), "ok", "a session key on the same token is wrapped");

  const { s, key } = hsmKey(ENC_ONLY);
  const before = await fixture.emulator.requestCounts(ENC_ONLY);
  t.is(rvOf(() => pkcs11.C_WrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, key, sessionKey(s, randomBytes(32)), Buffer.alloc(128))), pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED);
  const kekBytes = await fixture.emulator.octKeyBytes(ENC_ONLY);
  const cipher = createCipheriv("id-aes256-wrap", kekBytes, KW_IV);
  const wrapped = Buffer.concat([cipher.update(randomBytes(32)), cipher.final()]);
  t.is(rvOf(() => pkcs11.C_UnwrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, key, wrapped, unwrapTemplate())), pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED);
  t.deepEqual(requestsSince(before, await fixture.emulator.requestCounts(ENC_ONLY)), {}, "refused before the HSM is asked");
  const iv = randomBytes(16);
  const data = randomBytes(16);
  t.deepEqual(encryptOnce(s, cbc(iv, false), key, data), nodeCbc("encrypt", kekBytes, iv, false, data), "the key still encrypts");
  pkcs11.C_CloseSession(s);
  pkcs11.C_CloseSession(vault);
});

// ---- 6. C_GenerateKey in the HSM (last: it restarts the module) --------------------------------------------

test.serial("C_GenerateKey with CKA_TOKEN true on the vault token makes a tagged oct-HSM key, which a new helper sizes without a probe", async (t) => {
  const { pkcs11 } = fixture;
  const name = "made-by-pkcs11";
  const s = session(vaultSlot, true);
  const template: pkcs11js.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: 24 },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: name },
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
  ];
  const ro = session(vaultSlot);
  t.is(rvOf(() => pkcs11.C_GenerateKey(ro, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, template)), pkcs11js.CKR_SESSION_READ_ONLY, "a read-only session makes no token key");
  const key = pkcs11.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, template);
  t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_TOKEN)));
  t.is(ulong(attribute(pkcs11, s, key, pkcs11js.CKA_VALUE_LEN)), 24);
  t.true(bool(attribute(pkcs11, s, key, pkcs11js.CKA_LOCAL)));
  t.is(rvOf(() => attribute(pkcs11, s, key, pkcs11js.CKA_VALUE)), pkcs11js.CKR_ATTRIBUTE_SENSITIVE);

  const stored = await fixture.vaultGet(`/keys/${name}?api-version=7.4`);
  t.is(stored.status, 200);
  const body = stored.body as { key: { kty: string; key_ops: string[] }; tags?: Record<string, string> };
  t.is(body.key.kty, "oct-HSM");
  t.deepEqual([...body.key.key_ops].sort(), ["decrypt", "encrypt"]);
  t.is(body.tags?.["p11_secret_CKA_VALUE_LEN"], "24", "the size is kept in a tag");
  t.is(body.tags?.["p11_pri_CKA_LABEL"], name);
  const bytes = await fixture.emulator.octKeyBytes(name);
  t.is(bytes.length, 24, "the HSM holds a 192-bit key");
  const iv = randomBytes(16);
  const data = randomBytes(30);
  t.deepEqual(encryptOnce(s, cbc(iv, true), key, data), nodeCbc("encrypt", bytes, iv, true, data), "it encrypts in the HSM with the emulator's bytes");

  // A new helper: the tag gives CKA_VALUE_LEN, so the new key costs no probe, while an untagged key still does.
  pkcs11.C_Finalize();
  const before = await fixture.emulator.requestCounts();
  const beforeKey = await fixture.emulator.requestCounts(name);
  const beforeUntagged = await fixture.emulator.requestCounts("aes128");
  pkcs11.C_Initialize();
  const again = session(pkcs11.C_GetSlotList(true)[fixture.keys.size]!);
  const found = secretKeyOn(again, name);
  t.is(ulong(attribute(pkcs11, again, found, pkcs11js.CKA_VALUE_LEN)), 24);
  const probes = (counts: Record<string, number>): number => (counts.encrypt ?? 0) + (counts.decrypt ?? 0) + (counts.wrapkey ?? 0);
  t.is(probes(requestsSince(beforeKey, await fixture.emulator.requestCounts(name))), 0, "no probe for the tagged key");
  t.is(ulong(attribute(pkcs11, again, secretKeyOn(again, "aes128"), pkcs11js.CKA_VALUE_LEN)), 16);
  t.true(probes(requestsSince(beforeUntagged, await fixture.emulator.requestCounts("aes128"))) > 0, "the untagged twin is probed");
  t.true(Object.keys(requestsSince(before, await fixture.emulator.requestCounts())).length > 0, "the new helper did talk to the HSM");
  pkcs11.C_CloseSession(again);
});
