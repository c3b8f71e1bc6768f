// AES-GCM encryption with a Managed HSM key through the PKCS#11 3.0 message API (#11): the HSM draws the IV, so
// C_EncryptMessage with CK_GCM_MESSAGE_PARAMS and CKG_GENERATE_RANDOM returns the IV and tag it made, which
// node:crypto must accept with the key bytes the emulator exposes; C_DecryptMessage takes a node:crypto message and
// refuses it tampered. pkcs11js speaks only 2.40, so message-driver.c (compiled here) makes the calls.
import test from "ava";
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from "node:crypto";
import path from "node:path";
import pkcs11js from "pkcs11js";
import { compileDriver, onlyDriverLines, runHost } from "../native/driver.ts";
import { modulePath, repoRoot, requestsSince, startModuleFixture, type ModuleFixture } from "./harness.ts";

const hex = (rv: number): string => `0x${rv.toString(16)}`;
const KEYS = ["aes256", "aes128"];

let fixture: ModuleFixture;
let driver: string;
test.before(async () => {
  fixture = await startModuleFixture({ managedHsm: true, keys: "aes256:oct-HSM:256,aes128:oct-HSM:128", skipInitialize: true });
  driver = compileDriver(path.join(repoRoot, "test", "module", "message-driver.c"));
});
test.after.always(() => fixture?.close());

function nodeOpen(key: Buffer, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer): Buffer {
  const decipher = createDecipheriv(`aes-${key.length * 8}-gcm` as CipherGCMTypes, key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

for (const [index, name] of KEYS.entries()) {
  test.serial(`${name}: C_EncryptMessage with CKG_GENERATE_RANDOM returns the HSM's IV and tag, node:crypto opens it; C_DecryptMessage opens node's message`, async (t) => {
    const key = await fixture.emulator.octKeyBytes(name);
    const plaintext = randomBytes(45);
    const aad = Buffer.from(`associated data for ${name}`);
    const iv = randomBytes(12);
    const cipher = createCipheriv(`aes-${key.length * 8}-gcm` as CipherGCMTypes, key, iv);
    cipher.setAAD(aad);
    const nodeCiphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const nodeTag = cipher.getAuthTag();

    const before = await fixture.emulator.requestCounts(name);
    const { stdout, values: v } = await runHost(driver, [modulePath, String(index), plaintext.toString("hex"), aad.toString("hex"), iv.toString("hex"), nodeCiphertext.toString("hex"), nodeTag.toString("hex")]);
    t.is(v.get("done"), "1", stdout);
    t.true(onlyDriverLines(stdout), "nothing but the driver writes to stdout");
    t.is(v.get("keys"), "1");
    t.is(v.get("EncryptMessage.notInitialized"), hex(pkcs11js.CKR_OPERATION_NOT_INITIALIZED));
    t.is(v.get("MessageEncryptInit.cbc"), hex(pkcs11js.CKR_MECHANISM_INVALID), "messages are GCM only");
    t.is(v.get("MessageEncryptInit"), hex(pkcs11js.CKR_OK));
    t.is(v.get("MessageEncryptInit.again"), hex(pkcs11js.CKR_OPERATION_ACTIVE));

    // A length query: the ciphertext is as long as the plaintext, and IV and tag stay unwritten.
    t.is(v.get("query.rv"), hex(pkcs11js.CKR_OK));
    t.is(v.get("query.len"), String(plaintext.length));
    t.is(v.get("query.untouched"), "1");

    const opened: Buffer[] = [];
    for (const which of ["first", "second"]) {
      t.is(v.get(`${which}.rv`), hex(pkcs11js.CKR_OK), which);
      const ciphertext = Buffer.from(v.get(`${which}.ciphertext`) ?? "", "hex");
      const hsmIv = Buffer.from(v.get(`${which}.iv`) ?? "", "hex");
      const tag = Buffer.from(v.get(`${which}.tag`) ?? "", "hex");
      t.is(ciphertext.length, plaintext.length);
      t.is(hsmIv.length, 12);
      t.is(tag.length, 16);
      t.deepEqual(nodeOpen(key, hsmIv, aad, ciphertext, tag), plaintext, `${which}: node opens the HSM's message with the emulator's key bytes`);
      const badTag = Buffer.from(tag);
      badTag[0]! ^= 1;
      t.throws(() => nodeOpen(key, hsmIv, aad, ciphertext, badTag), undefined, `${which}: the tampered twin does not open`);
      t.throws(() => nodeOpen(key, hsmIv, Buffer.concat([aad, Buffer.from("!")]), ciphertext, tag), undefined, `${which}: nor with other AAD`);
      opened.push(hsmIv);
    }
    t.notDeepEqual(opened[0], opened[1], "each message gets its own IV");

    // What Managed HSM cannot honour is refused, with IV and tag left alone.
    for (const which of ["callerIv", "iv16", "tag96"]) {
      t.is(v.get(`${which}.rv`), hex(pkcs11js.CKR_ARGUMENTS_BAD), which);
      t.is(v.get(`${which}.untouched`), "1", which);
    }
    t.is(v.get("MessageEncryptFinal"), hex(pkcs11js.CKR_OK));
    t.is(v.get("afterFinal.rv"), hex(pkcs11js.CKR_OPERATION_NOT_INITIALIZED));
    t.is(v.get("MessageEncryptFinal.again"), hex(pkcs11js.CKR_OPERATION_NOT_INITIALIZED));

    t.is(v.get("MessageDecryptInit"), hex(pkcs11js.CKR_OK));
    t.is(v.get("node.rv"), hex(pkcs11js.CKR_OK));
    t.is(v.get("node.plaintext"), plaintext.toString("hex"), "node's message opens in the HSM");
    for (const which of ["tamperedTag", "tamperedAad", "tamperedCiphertext"]) {
      t.is(v.get(`${which}.rv`), hex(pkcs11js.CKR_ENCRYPTED_DATA_INVALID), which);
      t.false(v.has(`${which}.plaintext`), `${which}: no output`);
    }
    t.is(v.get("nodeAgain.plaintext"), plaintext.toString("hex"), "a refused message leaves the operation usable");
    t.is(v.get("MessageDecryptFinal"), hex(pkcs11js.CKR_OK));
    t.is(v.get("afterFinal.rv"), hex(pkcs11js.CKR_OPERATION_NOT_INITIALIZED));
    t.is(v.get("Finalize"), hex(pkcs11js.CKR_OK));

    // Two encryptions and five decryptions reached the HSM; the refused calls and the query did not. The driver's
    // helper is new, so it also probed the untagged key's size: one A*CBC encryption per size tried, 256 bits first.
    const sent = requestsSince(before, await fixture.emulator.requestCounts(name));
    const probes = [32, 24, 16].indexOf(key.length) + 1;
    t.is(sent.encrypt, 2 + probes, JSON.stringify(sent));
    t.is(sent.decrypt, 5, JSON.stringify(sent));
  });
}
