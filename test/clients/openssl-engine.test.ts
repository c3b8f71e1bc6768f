// openssl 3 with the libp11 engine (libengine-pkcs11-openssl): self-signed certificates and dgst signatures made
// with the token's keys, checked by openssl with the vault's public key.
import test from "ava";
import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { describe, samePublicKey, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;
let opensslConfig: string;

test.before(async () => {
  fixture = await startClientFixture();
  opensslConfig = await fixture.opensslEngineConfig();
  await writeFile(fixture.file("data.txt"), "azure-keyvault-pkcs11 client test: openssl dgst\n");
});

test.after.always(async () => {
  await fixture?.close();
});

function openssl(args: string[]) {
  return fixture.run("openssl", args, { env: { ...fixture.env, OPENSSL_CONF: opensslConfig } });
}

for (const kind of ["rsa", "ec"] as const) {
  test(`openssl req -new -x509 signs a self-signed certificate with the ${kind} key`, async (t) => {
    const key = fixture[kind];
    const out = fixture.file(`${kind}-selfsigned.pem`);
    const result = await openssl([
      "req", "-new", "-x509", "-engine", "pkcs11", "-keyform", "engine", "-key", key.privateKeyUriWithPin,
      "-sha256", "-subj", `/CN=openssl-engine-${kind}`, "-days", "30", "-out", out,
    ]);
    t.is(result.code, 0, describe(result));
    const certificate = new X509Certificate(await readFile(out));
    t.true(samePublicKey(certificate.publicKey, key.publicKey), "the certificate carries the vault's public key");
    t.true(certificate.verify(key.publicKey), "node:crypto verifies the certificate's signature with the vault's key");
    // Plain openssl, no engine: the check is independent of the module.
    const verify = await fixture.run("openssl", ["verify", "-check_ss_sig", "-CAfile", out, out]);
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /: OK$/m, describe(verify));
  });

  test(`openssl dgst -sign with the ${kind} key verifies with dgst -verify`, async (t) => {
    const key = fixture[kind];
    const sig = fixture.file(`${kind}-dgst.sig`);
    const result = await openssl([
      "dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine", "-sign", key.privateKeyUriWithPin, "-out", sig, fixture.file("data.txt"),
    ]);
    t.is(result.code, 0, describe(result));
    const verify = await fixture.run("openssl", ["dgst", "-sha256", "-verify", key.publicKeyPath, "-signature", sig, fixture.file("data.txt")]);
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /Verified OK/, describe(verify));
    await writeFile(fixture.file(`${kind}-other.txt`), "a different message\n");
    const negative = await fixture.run("openssl", ["dgst", "-sha256", "-verify", key.publicKeyPath, "-signature", sig, fixture.file(`${kind}-other.txt`)]);
    t.not(negative.code, 0, describe(negative));
  });
}

test("openssl pkeyutl -sign with the EC key, as in the C++ module's README", async (t) => {
  const key = fixture.ec;
  const digest = fixture.file("pkeyutl.sha256");
  const sha = await fixture.run("openssl", ["dgst", "-sha256", "-binary", "-out", digest, fixture.file("data.txt")]);
  t.is(sha.code, 0, describe(sha));
  const sig = fixture.file("pkeyutl.sig");
  const result = await openssl(["pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign", "-inkey", key.privateKeyUriWithPin, "-in", digest, "-out", sig]);
  t.is(result.code, 0, describe(result));
  const verify = await fixture.run("openssl", ["pkeyutl", "-verify", "-pubin", "-inkey", key.publicKeyPath, "-in", digest, "-sigfile", sig]);
  t.is(verify.code, 0, describe(verify));
  t.regex(verify.stdout, /Signature Verified Successfully/, describe(verify));
});
