// A least-privilege identity on a vault token (issue #10): the emulator refuses keys/create with the service's 403,
// so pkcs11-tool --keypairgen fails with CKR_FUNCTION_REJECTED and a log line naming the permission, while signing
// with a key the vault already holds keeps working (verified by openssl against the vault's JWK).
import test from "ava";
import { writeFile } from "node:fs/promises";
import { describe, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;
const message = Buffer.from("azure-keyvault-pkcs11 client test: least privilege\n");

test.before(async () => {
  fixture = await startClientFixture({ vaultToken: true, deny: ["keys/create"] });
  await writeFile(fixture.file("message.bin"), message);
});

test.after.always(async () => {
  await fixture?.close();
});

function onVault(args: string[]) {
  return fixture.run("pkcs11-tool", ["--module", fixture.modulePath, "--token-label", fixture.vault!.tokenLabel, ...args]);
}

test("without keys/create, --keypairgen fails with CKR_FUNCTION_REJECTED and makes nothing; signing with an existing key still works", async (t) => {
  const label = "denied-key";
  const made = await onVault(["--keypairgen", "--key-type", "rsa:2048", "--label", label, "--id", "dd01"]);
  t.not(made.code, 0, describe(made));
  // pkcs11-tool 0.23 has no name for 0x200.
  t.regex(made.stderr, /C_GenerateKeyPair failed: rv = .*\(0x200\)/, describe(made));
  const logged = made.stderr.split("\n").filter((line) => /CKR_FUNCTION_REJECTED/.test(line));
  t.is(logged.length, 1, describe(made));
  t.regex(logged[0] ?? "", /keys\/create/);
  t.is(await fixture.vault!.key(label), undefined);

  // The vault's rsa-key has no PKCS#11 tags: the token shows it under its name, with an id of the module's.
  const listed = await onVault(["-O"]);
  t.is(listed.code, 0, describe(listed));
  const block = listed.stdout.split(/^(?=\S.* Object;)/m).find((b) => /^Private Key Object/.test(b) && new RegExp(`^\\s*label:\\s*${fixture.rsa.keyName}$`, "m").test(b));
  const id = /^\s*ID:\s*([0-9a-f]+)$/m.exec(block ?? "")?.[1];
  if (!id) return t.fail(`no private key ${fixture.rsa.keyName} with an ID in:\n${listed.stdout}`);
  const sig = fixture.file("existing.sig");
  const signed = await onVault(["--sign", "-m", "SHA256-RSA-PKCS", "--id", id, "-i", fixture.file("message.bin"), "-o", sig]);
  t.is(signed.code, 0, describe(signed));
  const verified = await fixture.run("openssl", ["dgst", "-sha256", "-verify", fixture.rsa.publicKeyPath, "-signature", sig, fixture.file("message.bin")]);
  t.is(verified.code, 0, describe(verified));
  t.regex(verified.stdout, /Verified OK/, describe(verified));
});
