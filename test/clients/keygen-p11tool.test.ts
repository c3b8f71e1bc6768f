// GnuTLS p11tool generating a key on a vault token (issue #10): --generate-privkey=ecdsa --curve=secp256r1 --label,
// then in new processes p11tool --test-sign and a pkcs11-tool signature found by the CKA_ID that p11tool gave the key
// (read from the key's tags in the vault), verified by openssl against the vault's JWK.
import test from "ava";
import { createPublicKey } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { describe, samePublicKey, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;
const message = Buffer.from("azure-keyvault-pkcs11 client test: a key made with p11tool\n");

test.before(async () => {
  fixture = await startClientFixture({ vaultToken: true });
  await writeFile(fixture.file("message.bin"), message);
});

test.after.always(async () => {
  await fixture?.close();
});

/** --batch makes p11tool fail instead of prompting. */
function p11tool(args: string[]) {
  return fixture.run("p11tool", ["--provider", fixture.modulePath, "--batch", ...args]);
}

test("p11tool --generate-privkey=ecdsa --curve=secp256r1: a new process signs with it, openssl verifies with the vault's JWK", async (t) => {
  const label = "gnutls-ec-p256";
  const token = `pkcs11:token=${fixture.vault!.tokenLabel}`;
  const made = await p11tool(["--generate-privkey=ecdsa", "--curve=secp256r1", `--label=${label}`, "--outfile", fixture.file(`${label}.gen.pub.pem`), token]);
  t.is(made.code, 0, describe(made));

  const view = await fixture.vault!.key(label);
  if (!view) return t.fail(`the vault has no key ${label}`);
  t.is(view.kty, "EC");
  t.is(view.crv, "P-256");
  t.is(view.tags["p11_pri_CKA_LABEL"], label, JSON.stringify(view.tags));
  // p11tool gives the key an id of its own (a hash of the public key) once it is made; the vault keeps it.
  const id = view.tags["p11_pri_CKA_ID"];
  t.regex(id ?? "", /^([0-9a-f]{2})+$/, JSON.stringify(view.tags));
  const pem = fixture.file(`${label}.vault.pub.pem`);
  await writeFile(pem, view.publicKey.export({ type: "spki", format: "pem" }));

  const tested = await p11tool(["--test-sign", `${token};object=${label}`]);
  t.is(tested.code, 0, describe(tested));
  t.regex(tested.stdout + tested.stderr, /Signing using .*\.\.\. ok/, describe(tested));
  t.regex(tested.stdout + tested.stderr, /Verifying against public key in the token\.\.\. ok/, describe(tested));
  // --test-sign verifies with the token's public key; that key is the vault's.
  const exported = await p11tool(["--export-pubkey", `${token};object=${label};type=public`]);
  t.is(exported.code, 0, describe(exported));
  t.true(samePublicKey(createPublicKey(exported.stdout), view.publicKey), describe(exported));

  const sig = fixture.file(`${label}.sig`);
  const signed = await fixture.run("pkcs11-tool", ["--module", fixture.modulePath, "--token-label", fixture.vault!.tokenLabel,
    "--sign", "-m", "ECDSA-SHA256", "--signature-format", "openssl", "--id", id ?? "", "-i", fixture.file("message.bin"), "-o", sig]);
  t.is(signed.code, 0, describe(signed));
  const verified = await fixture.run("openssl", ["dgst", "-sha256", "-verify", pem, "-signature", sig, fixture.file("message.bin")]);
  t.is(verified.code, 0, describe(verified));
  t.regex(verified.stdout, /Verified OK/, describe(verified));
  const wrongKey = await fixture.run("openssl", ["dgst", "-sha256", "-verify", fixture.ec.publicKeyPath, "-signature", sig, fixture.file("message.bin")]);
  t.not(wrongKey.code, 0, describe(wrongKey));
});
