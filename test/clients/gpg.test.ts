// GnuPG through gnupg-pkcs11-scd: gpg-agent runs gnupg-pkcs11-scd as its scdaemon, which exposes the token's key
// (gnupg-pkcs11-scd 0.10 offers RSA keys that have a certificate on the token). An OpenPGP key is made from the
// card key's keygrip, gpg signs through it, and a second, agent-less keyring holding only the exported public key
// verifies the signature. The OpenPGP key's RSA modulus is compared with the vault's JWK.
import test from "ava";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;
let gnupgHome: string;

test.before(async () => {
  fixture = await startClientFixture();
  gnupgHome = fixture.file("gnupg");
  await mkdir(gnupgHome, { mode: 0o700 });
  await chmod(gnupgHome, 0o700);
  await writeFile(
    path.join(gnupgHome, "gnupg-pkcs11-scd.conf"),
    `providers akv\nprovider-akv-library ${fixture.modulePath}\nlog-file ${path.join(gnupgHome, "scd.log")}\n`,
  );
  await writeFile(path.join(gnupgHome, "gpg-agent.conf"), "scdaemon-program /usr/bin/gnupg-pkcs11-scd\n");
});

test.after.always(async () => {
  if (gnupgHome) await fixture.run("gpgconf", ["--kill", "all"], { env: gpgEnv() });
  await fixture?.close();
});

function gpgEnv(home = gnupgHome): NodeJS.ProcessEnv {
  return { ...fixture.env, GNUPGHOME: home };
}

test("gpg signs with the token's RSA key through gnupg-pkcs11-scd and the signature verifies", async (t) => {
  const key = fixture.rsa;
  // SCD LEARN lists the token's key pairs; the agent then stores stubs pointing at the card.
  const learn = await fixture.run("gpg-connect-agent", ["SCD LEARN", "/bye"], { env: gpgEnv(), timeoutMs: 60_000 });
  t.is(learn.code, 0, describe(learn));
  const keygrip = /^S KEY-FRIEDNLY ([0-9A-F]{40}) .*CN=.*on (\S+)$/m.exec(learn.stdout);
  t.truthy(keygrip, describe(learn));
  t.is(keygrip?.[2], key.tokenLabel, describe(learn));
  const status = await fixture.run("gpg", ["--batch", "--card-status"], { env: gpgEnv(), timeoutMs: 60_000 });
  t.is(status.code, 0, describe(status));

  await writeFile(
    fixture.file("keygen.txt"),
    `Key-Type: RSA\nKey-Grip: ${keygrip?.[1]}\nKey-Usage: sign\nName-Real: Key Vault Signer\nName-Email: signer@example.test\nExpire-Date: 0\n%no-protection\n%commit\n`,
  );
  const generate = await fixture.run("gpg", ["--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--generate-key", fixture.file("keygen.txt")], {
    env: gpgEnv(),
    timeoutMs: 60_000,
  });
  t.is(generate.code, 0, describe(generate));

  // The OpenPGP key is the vault's key: its RSA modulus (pkd 0) equals the JWK's n.
  const listing = await fixture.run("gpg", ["--batch", "--with-colons", "--with-key-data", "--list-keys", "signer@example.test"], { env: gpgEnv() });
  t.is(listing.code, 0, describe(listing));
  const modulus = /^pkd:0:\d+:([0-9A-F]+):/m.exec(listing.stdout)?.[1];
  const jwk = key.publicKey.export({ format: "jwk" });
  t.is(modulus?.toLowerCase(), Buffer.from(jwk.n as string, "base64url").toString("hex"), describe(listing));

  const message = fixture.file("gpg-message.txt");
  await writeFile(message, "azure-keyvault-pkcs11 client test: gpg\n");
  const sign = await fixture.run(
    "gpg",
    ["--batch", "--pinentry-mode", "loopback", "--passphrase", "", "-u", "signer@example.test", "--detach-sign", "-o", `${message}.sig`, message],
    { env: gpgEnv(), timeoutMs: 60_000 },
  );
  t.is(sign.code, 0, describe(sign));

  // Verify in a fresh keyring that has only the exported public key and no agent or card.
  const exported = await fixture.run("gpg", ["--batch", "--armor", "--export", "signer@example.test"], { env: gpgEnv() });
  t.is(exported.code, 0, describe(exported));
  const verifierHome = fixture.file("gnupg-verifier");
  await mkdir(verifierHome, { mode: 0o700 });
  const imported = await fixture.run("gpg", ["--batch", "--import"], { env: gpgEnv(verifierHome), input: exported.stdout });
  t.is(imported.code, 0, describe(imported));
  const verify = await fixture.run("gpg", ["--batch", "--status-fd", "1", "--verify", `${message}.sig`, message], { env: gpgEnv(verifierHome) });
  t.is(verify.code, 0, describe(verify));
  t.regex(verify.stdout, /^\[GNUPG:\] GOODSIG /m, describe(verify));
  t.regex(verify.stdout, /^\[GNUPG:\] VALIDSIG /m, describe(verify));
  await writeFile(fixture.file("gpg-other.txt"), "a different message\n");
  const tampered = await fixture.run("gpg", ["--batch", "--verify", `${message}.sig`, fixture.file("gpg-other.txt")], { env: gpgEnv(verifierHome) });
  t.not(tampered.code, 0, describe(tampered));
  await fixture.run("gpgconf", ["--kill", "all"], { env: gpgEnv(verifierHome) });
});
