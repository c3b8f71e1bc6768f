// OpenJDK 17 SunPKCS11 with Managed HSM AES keys (#11): AesCipher.java (javac at test time) runs one
// javax.crypto.Cipher call per process. AES/CBC/PKCS5Padding both ways and AES/GCM/NoPadding decryption of a
// node:crypto message are checked with node:crypto against the key bytes the emulator exposes; GCM encryption must
// fail clearly, because the HSM picks the IV itself and SunPKCS11 only speaks C_EncryptInit with its own IV.
import test from "ava";
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { modulePath, repoRoot, startModuleFixture, type ModuleFixture } from "../module/harness.ts";
import { describe, run } from "./process.ts";

const KEYS = ["aes256", "aes128"];
let fixture: ModuleFixture;
let classes: string;
const configs = new Map<string, string>();

test.before(async () => {
  fixture = await startModuleFixture({ managedHsm: true, keys: "aes256:oct-HSM:256,aes128:oct-HSM:128", skipInitialize: true });
  classes = path.join(fixture.dir, "java-classes");
  const javac = await run("javac", ["-d", classes, path.join(repoRoot, "test/clients/AesCipher.java")], { env: process.env, timeoutMs: 120_000 });
  if (javac.code !== 0) throw new Error(describe(javac));
  for (const [index, name] of KEYS.entries()) {
    const file = path.join(fixture.dir, `sunpkcs11-${name}.cfg`);
    // slotListIndex: the per-key slots come in config.json order.
    await writeFile(file, `name = akv-${name}\nlibrary = ${modulePath}\nslotListIndex = ${index}\n`);
    configs.set(name, file);
  }
});
test.after.always(() => fixture?.close());

/** One Cipher call; "OUT"/"IV"/"ERROR" lines of AesCipher.java. */
async function javaCipher(name: string, transformation: string, direction: "encrypt" | "decrypt", iv: Buffer, aad: Buffer, input: Buffer): Promise<Map<string, string>> {
  const result = await run("java", ["-cp", classes, "AesCipher", configs.get(name)!, name, transformation, direction, iv.toString("hex"), aad.toString("hex"), input.toString("hex")], { env: process.env, timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(describe(result));
  const lines = new Map<string, string>();
  for (const line of result.stdout.split("\n")) {
    const space = line.indexOf(" ");
    if (space > 0) lines.set(line.slice(0, space), line.slice(space + 1));
  }
  lines.set("stderr", result.stderr);
  return lines;
}

function nodeCbc(direction: "encrypt" | "decrypt", key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const cipher = (direction === "encrypt" ? createCipheriv : createDecipheriv)(`aes-${key.length * 8}-cbc`, key, iv);
  return Buffer.concat([cipher.update(data), cipher.final()]);
}

for (const name of KEYS) {
  test(`AES/CBC/PKCS5Padding with ${name}: SunPKCS11's ciphertext is node's, and node's decrypts in SunPKCS11`, async (t) => {
    const key = await fixture.emulator.octKeyBytes(name);
    const iv = randomBytes(16);
    const data = randomBytes(41);
    const encrypted = await javaCipher(name, "AES/CBC/PKCS5Padding", "encrypt", iv, Buffer.alloc(0), data);
    t.is(encrypted.get("KEY"), "AES P11SecretKey", encrypted.get("stderr"));
    t.is(encrypted.get("ALIASES"), name, "the token's one secret key, by its label");
    t.is(encrypted.get("OUT"), nodeCbc("encrypt", key, iv, data).toString("hex"), encrypted.get("ERROR") ?? "");
    const decrypted = await javaCipher(name, "AES/CBC/PKCS5Padding", "decrypt", iv, Buffer.alloc(0), nodeCbc("encrypt", key, iv, data));
    t.is(decrypted.get("OUT"), data.toString("hex"), decrypted.get("ERROR") ?? "");
    // The tampered twin: a last block whose pad byte is 0 never unpads.
    const badPad = createCipheriv(`aes-${key.length * 8}-cbc`, key, iv).setAutoPadding(false).update(Buffer.alloc(32));
    const refused = await javaCipher(name, "AES/CBC/PKCS5Padding", "decrypt", iv, Buffer.alloc(0), badPad);
    t.false(refused.has("OUT"));
    t.regex(refused.get("ERROR") ?? "", /CKR_ENCRYPTED_DATA_INVALID/);
  });
}

test("AES/GCM/NoPadding: a node:crypto message decrypts in SunPKCS11 with its IV, AAD and tag; tampered, it is AEADBadTagException", async (t) => {
  const key = await fixture.emulator.octKeyBytes("aes256");
  const iv = randomBytes(12);
  const aad = Buffer.from("SunPKCS11 updateAAD");
  const data = randomBytes(33);
  const cipher = createCipheriv("aes-256-gcm" as CipherGCMTypes, key, iv);
  cipher.setAAD(aad);
  const sealed = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
  const opened = await javaCipher("aes256", "AES/GCM/NoPadding", "decrypt", iv, aad, sealed);
  t.is(opened.get("OUT"), data.toString("hex"), opened.get("ERROR") ?? "");
  // SunPKCS11 offers the CK_GCM_PARAMS of v2.40 as first published (no ulIvBits) before the errata's: both are taken.
  t.notRegex(opened.get("stderr") ?? "", /CK_GCM_PARAMS/, "no refused parameter layout on the way");
  const tampered = Buffer.from(sealed);
  tampered[tampered.length - 1]! ^= 1;
  const refused = await javaCipher("aes256", "AES/GCM/NoPadding", "decrypt", iv, aad, tampered);
  t.false(refused.has("OUT"));
  t.regex(refused.get("ERROR") ?? "", /^javax\.crypto\.AEADBadTagException: .*CKR_ENCRYPTED_DATA_INVALID/);
  const otherAad = await javaCipher("aes256", "AES/GCM/NoPadding", "decrypt", iv, Buffer.from("other AAD"), sealed);
  t.regex(otherAad.get("ERROR") ?? "", /AEADBadTagException/);
});

test("AES/GCM/NoPadding encryption with an HSM key fails clearly: the HSM picks the IV, so C_EncryptInit is CKR_MECHANISM_PARAM_INVALID", async (t) => {
  for (const iv of [Buffer.alloc(0), randomBytes(12)]) {
    const result = await javaCipher("aes256", "AES/GCM/NoPadding", "encrypt", iv, Buffer.alloc(0), randomBytes(16));
    t.false(result.has("OUT"), "no ciphertext");
    t.regex(result.get("ERROR") ?? "", /CKR_MECHANISM_PARAM_INVALID/, iv.length === 0 ? "provider's IV" : "caller's IV");
    t.regex(result.get("stderr") ?? "", /Managed HSM chooses the GCM IV itself/, "the module's log line says why");
  }
});
