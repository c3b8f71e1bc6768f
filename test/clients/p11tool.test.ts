// GnuTLS p11tool (gnutls-bin): token and object listing, and --test-sign with both keys.
import test from "ava";
import { createPublicKey } from "node:crypto";
import { describe, samePublicKey, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;

test.before(async () => {
  fixture = await startClientFixture();
});

test.after.always(async () => {
  await fixture?.close();
});

/** --batch makes p11tool fail instead of prompting; the PIN is only there for the SoftHSM backend. */
function p11tool(args: string[]) {
  const login = fixture.pin === undefined ? [] : ["--login"];
  const env = fixture.pin === undefined ? fixture.env : { ...fixture.env, GNUTLS_PIN: fixture.pin };
  return fixture.run("p11tool", ["--provider", fixture.modulePath, "--batch", ...login, ...args], { env });
}

test("p11tool --list-tokens shows one token per configured key", async (t) => {
  const result = await fixture.run("p11tool", ["--provider", fixture.modulePath, "--list-tokens"]);
  t.is(result.code, 0, describe(result));
  for (const key of fixture.keys) {
    t.regex(result.stdout, new RegExp(`^\\s*Label: ${key.tokenLabel}$`, "m"), describe(result));
    t.regex(result.stdout, new RegExp(`URL: pkcs11:.*token=${key.tokenLabel}\\b`), describe(result));
  }
});

for (const kind of ["rsa", "ec"] as const) {
  test(`p11tool --list-all shows the ${kind} private key, public key and certificate`, async (t) => {
    const key = fixture[kind];
    const result = await p11tool(["--list-all", `pkcs11:token=${key.tokenLabel}`]);
    t.is(result.code, 0, describe(result));
    const algorithm = kind === "rsa" ? "RSA-2048" : "EC(/ECDSA)?-SECP256R1";
    t.regex(result.stdout, new RegExp(`Type: Private key \\(${algorithm}\\)`), describe(result));
    t.regex(result.stdout, new RegExp(`Type: Public key \\(${algorithm}\\)`), describe(result));
    t.regex(result.stdout, /Type: X\.509 Certificate/, describe(result));
    for (const type of ["private", "public", "cert"]) {
      t.regex(result.stdout, new RegExp(`URL: pkcs11:.*token=${key.tokenLabel};.*object=${key.keyName};type=${type}$`, "m"), describe(result));
    }
    // The same CKA_ID on all three objects, so clients pair the key with its certificate.
    const ids = [...result.stdout.matchAll(/^\s*ID: (\S+)$/gm)].map((match) => match[1]);
    t.is(ids.length, 3, describe(result));
    t.is(new Set(ids).size, 1, describe(result));
  });

  test(`p11tool --test-sign works with the ${kind} key and its public key is the vault's`, async (t) => {
    const key = fixture[kind];
    const result = await p11tool(["--test-sign", `pkcs11:token=${key.tokenLabel};object=${key.keyName}`]);
    t.is(result.code, 0, describe(result));
    t.regex(result.stdout + result.stderr, /Signing using .*\.\.\. ok/, describe(result));
    t.regex(result.stdout + result.stderr, /Verifying against public key in the token\.\.\. ok/, describe(result));
    t.notRegex(result.stdout + result.stderr, /failed/i, describe(result));
    // p11tool verifies against the token's own public key; prove that key is the vault's.
    const exported = await p11tool(["--export-pubkey", `pkcs11:token=${key.tokenLabel};object=${key.keyName};type=public`]);
    t.is(exported.code, 0, describe(exported));
    t.true(samePublicKey(createPublicKey(exported.stdout), key.publicKey), describe(exported));
  });
}
