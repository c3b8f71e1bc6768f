// OpenSC pkcs11-tool: -L, -O, -I, signing with every mechanism clients use, verified by openssl with the vault's
// public key, and the built-in --test.
import test from "ava";
import { createHash, createPublicKey } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { describe, samePublicKey, startClientFixture, type ClientFixture, type ClientKey } from "./harness.ts";

let fixture: ClientFixture;
const message = Buffer.from("azure-keyvault-pkcs11 client test: pkcs11-tool\n");
const sha256 = createHash("sha256").update(message).digest();
// DER DigestInfo for SHA-256, the input CKM_RSA_PKCS signs for ssh-agent, the libp11 engine, osslsigncode and rauc.
const sha256DigestInfo = Buffer.concat([Buffer.from("3031300d060960864801650304020105000420", "hex"), sha256]);

test.before(async () => {
  fixture = await startClientFixture();
  await writeFile(fixture.file("message.bin"), message);
  await writeFile(fixture.file("message.sha256"), sha256);
  await writeFile(fixture.file("message.digestinfo"), sha256DigestInfo);
});

test.after.always(async () => {
  await fixture?.close();
});

function pkcs11Tool(key: ClientKey | undefined, args: string[]) {
  const token = key === undefined ? [] : ["--token-label", key.tokenLabel];
  const login = fixture.pin === undefined || key === undefined ? [] : ["--login", "--pin", fixture.pin];
  return fixture.run("pkcs11-tool", ["--module", fixture.modulePath, ...token, ...login, ...args]);
}

test("pkcs11-tool -L lists both tokens as initialized", async (t) => {
  const result = await pkcs11Tool(undefined, ["-L"]);
  t.is(result.code, 0, describe(result));
  for (const key of fixture.keys) {
    const block = result.stdout.split(/^Slot /m).find((slot) => new RegExp(`token label\\s*: ${key.tokenLabel}\\s*$`, "m").test(slot));
    t.truthy(block, describe(result));
    t.regex(block ?? "", /token flags\s*:.*token initialized/, describe(result));
  }
});

test("pkcs11-tool -I shows the module's information", async (t) => {
  const result = await pkcs11Tool(undefined, ["-I"]);
  t.is(result.code, 0, describe(result));
  t.regex(result.stdout, /^Cryptoki version [23]\.\d+$/m, describe(result));
  t.regex(result.stdout, /^Manufacturer\s+\S/m, describe(result));
  t.regex(result.stdout, /^Library\s+\S.* \(ver \d+\.\d+\)$/m, describe(result));
});

for (const kind of ["rsa", "ec"] as const) {
  test(`pkcs11-tool -O lists the ${kind} token's objects with every attribute`, async (t) => {
    const key = fixture[kind];
    const result = await pkcs11Tool(key, ["-O"]);
    t.is(result.code, 0, describe(result));
    const type = kind === "rsa" ? "RSA" : "EC";
    t.regex(result.stdout, new RegExp(`Private Key Object; ${type}`), describe(result));
    t.regex(result.stdout, new RegExp(`Public Key Object; ${type}`), describe(result));
    t.regex(result.stdout, /Certificate Object; type = X\.509 cert/, describe(result));
    t.is([...result.stdout.matchAll(new RegExp(`^\\s*label:\\s*${key.keyName}$`, "gm"))].length, 3, describe(result));
    t.regex(result.stdout, /Usage:\s*.*\bsign\b/, describe(result));
    // pkcs11-tool warns on stderr for each attribute a key of this class should have but the module refuses.
    t.notRegex(result.stderr, /CKR_|error/i, describe(result));
  });

  test(`pkcs11-tool reads the ${kind} public key off the token and it is the vault's`, async (t) => {
    const key = fixture[kind];
    const out = fixture.file(`${kind}-token-pub.der`);
    const result = await pkcs11Tool(key, ["--read-object", "--type", "pubkey", "--label", key.keyName, "-o", out]);
    t.is(result.code, 0, describe(result));
    const fromToken = createPublicKey({ key: await readFile(out), format: "der", type: "spki" });
    t.true(samePublicKey(fromToken, key.publicKey));
  });

  test(`pkcs11-tool --test reports no errors on the ${kind} token`, async (t) => {
    const result = await pkcs11Tool(fixture[kind], ["--test"]);
    t.is(result.code, 0, describe(result));
    t.regex(result.stdout, /No errors/, describe(result));
    t.notRegex(result.stdout, /\d+ errors?/, describe(result));
  });
}

interface SignCase {
  kind: "rsa" | "ec";
  mechanism: string;
  extra: string[];
  input: string;
  /** openssl arguments verifying fixture.file("sig") against the vault's public key (appended: -pubin -inkey). */
  verify: (key: ClientKey, sig: string) => string[];
}

const cases: SignCase[] = [
  {
    kind: "rsa",
    mechanism: "RSA-PKCS",
    extra: [],
    input: "message.digestinfo",
    verify: (key, sig) => ["pkeyutl", "-verify", "-pubin", "-inkey", key.publicKeyPath, "-in", fixture.file("message.digestinfo"), "-sigfile", sig],
  },
  {
    kind: "rsa",
    mechanism: "SHA256-RSA-PKCS",
    extra: [],
    input: "message.bin",
    verify: (key, sig) => ["dgst", "-sha256", "-verify", key.publicKeyPath, "-signature", sig, fixture.file("message.bin")],
  },
  {
    kind: "rsa",
    mechanism: "RSA-PKCS-PSS",
    extra: ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256", "--salt-len", "32"],
    input: "message.sha256",
    verify: (key, sig) => [
      "pkeyutl", "-verify", "-pubin", "-inkey", key.publicKeyPath, "-in", fixture.file("message.sha256"), "-sigfile", sig,
      "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_pss_saltlen:32", "-pkeyopt", "rsa_mgf1_md:sha256",
    ],
  },
  {
    kind: "ec",
    mechanism: "ECDSA",
    extra: ["--signature-format", "openssl"],
    input: "message.sha256",
    verify: (key, sig) => ["pkeyutl", "-verify", "-pubin", "-inkey", key.publicKeyPath, "-in", fixture.file("message.sha256"), "-sigfile", sig],
  },
  {
    kind: "ec",
    mechanism: "ECDSA-SHA256",
    extra: ["--signature-format", "openssl"],
    input: "message.bin",
    verify: (key, sig) => ["dgst", "-sha256", "-verify", key.publicKeyPath, "-signature", sig, fixture.file("message.bin")],
  },
];

for (const signCase of cases) {
  test(`pkcs11-tool --sign -m ${signCase.mechanism} (${signCase.kind}) verifies with openssl`, async (t) => {
    const key = fixture[signCase.kind];
    const sig = fixture.file(`${signCase.mechanism}.sig`);
    const result = await pkcs11Tool(key, [
      "--sign", "-m", signCase.mechanism, ...signCase.extra, "--label", key.keyName, "-i", fixture.file(signCase.input), "-o", sig,
    ]);
    t.is(result.code, 0, describe(result));
    t.true((await stat(sig)).size > 0, "pkcs11-tool wrote an empty signature");
    const verify = await fixture.run("openssl", signCase.verify(key, sig));
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /Verified OK|Signature Verified Successfully/, describe(verify));
  });
}

test("pkcs11-tool's RSA-PKCS signature is not accepted for other data (the verifier can fail)", async (t) => {
  const key = fixture.rsa;
  const sig = fixture.file("negative.sig");
  const result = await pkcs11Tool(key, ["--sign", "-m", "RSA-PKCS", "--label", key.keyName, "-i", fixture.file("message.digestinfo"), "-o", sig]);
  t.is(result.code, 0, describe(result));
  const other = Buffer.from(sha256DigestInfo);
  other[other.length - 1] ^= 1;
  await writeFile(fixture.file("other.digestinfo"), other);
  const verify = await fixture.run("openssl", ["pkeyutl", "-verify", "-pubin", "-inkey", key.publicKeyPath, "-in", fixture.file("other.digestinfo"), "-sigfile", sig]);
  t.not(verify.code, 0, describe(verify));
});
