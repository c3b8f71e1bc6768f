// OpenSC pkcs11-tool (Debian 12: 0.23) with Managed HSM AES keys (#11): --encrypt/--decrypt with AES-CBC-PAD and
// AES-CBC and --iv, every output checked with node:crypto against the key bytes the emulator exposes. What 0.23
// cannot do is pinned down too, so that a newer OpenSC shows up as a failing test to turn into a real one: its
// --encrypt has no AES-GCM (no --aad/--tag-bits-len) although the token lists it, and its --unwrap always asks for a
// token key (CKA_TOKEN true), which a Managed HSM cannot import: the module refuses that with one log line.
import test from "ava";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { modulePath, startModuleFixture, type ModuleFixture } from "../module/harness.ts";
import { describe, run, type RunResult } from "./process.ts";

const KEYS = ["aes256", "aes128"];
let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ managedHsm: true, keys: "aes256:oct-HSM:256,aes128:oct-HSM:128", skipInitialize: true });
});
test.after.always(() => fixture?.close());

let files = 0;
async function tool(name: string, args: string[], input?: Buffer): Promise<RunResult & { output?: Buffer }> {
  const id = files++;
  const inputFile = path.join(fixture.dir, `in-${id}`);
  const outputFile = path.join(fixture.dir, `out-${id}`);
  if (input) await writeFile(inputFile, input);
  const result = await run("pkcs11-tool", ["--module", modulePath, "--token-label", name, ...args, ...(input ? ["--input-file", inputFile, "--output-file", outputFile] : [])], { env: process.env });
  return { ...result, ...(result.code === 0 && input ? { output: await readFile(outputFile) } : {}) };
}

function nodeCbc(direction: "encrypt" | "decrypt", key: Buffer, iv: Buffer, pad: boolean, data: Buffer): Buffer {
  const cipher = (direction === "encrypt" ? createCipheriv : createDecipheriv)(`aes-${key.length * 8}-cbc`, key, iv);
  cipher.setAutoPadding(pad);
  return Buffer.concat([cipher.update(data), cipher.final()]);
}

for (const name of KEYS) {
  for (const [mechanism, pad] of [["AES-CBC-PAD", true], ["AES-CBC", false]] as const) {
    test(`pkcs11-tool --encrypt/--decrypt -m ${mechanism} --iv with ${name} agree with node:crypto`, async (t) => {
      const key = await fixture.emulator.octKeyBytes(name);
      const iv = randomBytes(16);
      const data = randomBytes(pad ? 50 : 64);
      const common = ["--label", name, "-m", mechanism, "--iv", iv.toString("hex")];
      const encrypted = await tool(name, ["--encrypt", ...common], data);
      t.is(encrypted.code, 0, describe(encrypted));
      t.deepEqual(encrypted.output, nodeCbc("encrypt", key, iv, pad, data), "pkcs11-tool's ciphertext is node's");
      const decrypted = await tool(name, ["--decrypt", ...common], nodeCbc("encrypt", key, iv, pad, data));
      t.is(decrypted.code, 0, describe(decrypted));
      t.deepEqual(decrypted.output, data, "node's ciphertext decrypts through pkcs11-tool");
      if (pad) {
        // The tampered twin: a last block ending in 0x00 never unpads.
        const badPad = nodeCbc("encrypt", key, iv, false, Buffer.alloc(32));
        const refused = await tool(name, ["--decrypt", ...common], badPad);
        t.not(refused.code, 0);
        t.regex(refused.stderr, /CKR_ENCRYPTED_DATA_INVALID/);
      } else {
        const partial = await tool(name, ["--encrypt", ...common], randomBytes(33));
        t.not(partial.code, 0, "CBC without padding takes whole blocks only");
        t.regex(partial.stderr, /CKR_DATA_LEN_RANGE/);
      }
    });
  }
}

test("OpenSC 0.23: -M lists AES-GCM for encrypt and decrypt, but pkcs11-tool's --encrypt has no GCM", async (t) => {
  const mechanisms = await tool("aes256", ["-M"]);
  t.is(mechanisms.code, 0, describe(mechanisms));
  t.regex(mechanisms.stdout, /AES-GCM, keySize=\{16,32\}, hw, encrypt, decrypt/);
  t.regex(mechanisms.stdout, /AES-KEY-WRAP, keySize=\{16,32\}, hw, wrap, unwrap/);
  const gcm = await tool("aes256", ["--encrypt", "--label", "aes256", "-m", "AES-GCM", "--iv", randomBytes(12).toString("hex")], randomBytes(16));
  t.not(gcm.code, 0);
  t.regex(gcm.stderr, /Mechanism AES-GCM illegal or not supported/, "pkcs11-tool's own refusal: no PKCS#11 call fails");
  t.notRegex(gcm.stderr, /AZURE_KEYVAULT/);
});

test("OpenSC 0.23: --unwrap asks for a token key, which the module refuses with one clear line; the HSM is not asked", async (t) => {
  const key = await fixture.emulator.octKeyBytes("aes256");
  const cipher = createCipheriv("id-aes256-wrap", key, Buffer.from("a6a6a6a6a6a6a6a6", "hex"));
  const wrapped = Buffer.concat([cipher.update(randomBytes(32)), cipher.final()]);
  const before = await fixture.emulator.requestCounts("aes256");
  const result = await tool("aes256", ["--unwrap", "--label", "aes256", "-m", "AES-KEY-WRAP", "--key-type", "AES:", "--extractable"], wrapped);
  t.not(result.code, 0);
  t.regex(result.stderr, /C_UnwrapKey failed: rv = CKR_ATTRIBUTE_VALUE_INVALID/);
  const lines = result.stderr.split("\n").filter((line) => line.startsWith("AZURE_KEYVAULT:"));
  t.is(lines.length, 1, result.stderr);
  t.regex(lines[0] ?? "", /CKA_TOKEN true cannot be honoured/);
  t.is((await fixture.emulator.requestCounts("aes256")).unwrapkey ?? 0, before.unwrapkey ?? 0);
});
