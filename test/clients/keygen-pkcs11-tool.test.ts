// OpenSC pkcs11-tool on a vault token (issue #10): --keypairgen RSA 3072 and EC P-384 with --label and --id; new
// processes find the key by label (a C_FindObjects by CKA_LABEL) and sign with it by id (OpenSC 0.23's
// --sign finds its key by CKA_ID only, or takes the first private key: it ignores --label). The key's type, size and
// tags are read from the vault's REST API, and every signature is verified by openssl against the vault's JWK.
import test from "ava";
import { createHash, createPublicKey } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { describe, samePublicKey, startClientFixture, type ClientFixture, type VaultKeyView } from "./harness.ts";

let fixture: ClientFixture;
const message = Buffer.from("azure-keyvault-pkcs11 client test: keys made with pkcs11-tool\n");

test.before(async () => {
  fixture = await startClientFixture({ vaultToken: true });
  await writeFile(fixture.file("message.bin"), message);
  await writeFile(fixture.file("message.sha384"), createHash("sha384").update(message).digest());
});

test.after.always(async () => {
  await fixture?.close();
});

function onVault(args: string[]) {
  return fixture.run("pkcs11-tool", ["--module", fixture.modulePath, "--token-label", fixture.vault!.tokenLabel, ...args]);
}

/** The vault's view of a key that must exist, its JWK written as PEM for openssl. */
async function vaultKey(name: string): Promise<{ view: VaultKeyView; pem: string }> {
  const view = await fixture.vault!.key(name);
  if (!view) throw new Error(`the vault has no key ${name}`);
  const pem = fixture.file(`${name}.vault.pub.pem`);
  await writeFile(pem, view.publicKey.export({ type: "spki", format: "pem" }));
  return { view, pem };
}

interface KeygenCase {
  keyType: string;
  label: string;
  id: string;
  mechanism: string;
  extra: string[];
  input: string;
  check(view: VaultKeyView): void;
  verify(pem: string, sig: string): string[];
}

const cases: KeygenCase[] = [
  {
    keyType: "rsa:3072",
    label: "tool-rsa-3072",
    id: "a1b2c3d4",
    mechanism: "SHA256-RSA-PKCS",
    extra: [],
    input: "message.bin",
    check(view) {
      if (view.kty !== "RSA" || view.modulusBits !== 3072) throw new Error(`expected an RSA 3072 key, the vault has ${view.kty} ${view.modulusBits}`);
    },
    verify: (pem, sig) => ["dgst", "-sha256", "-verify", pem, "-signature", sig, fixture.file("message.bin")],
  },
  {
    keyType: "EC:secp384r1",
    label: "tool-ec-p384",
    id: "0e0f1011",
    mechanism: "ECDSA",
    extra: ["--signature-format", "openssl"],
    input: "message.sha384",
    check(view) {
      if (view.kty !== "EC" || view.crv !== "P-384") throw new Error(`expected an EC P-384 key, the vault has ${view.kty} ${view.crv}`);
    },
    verify: (pem, sig) => ["pkeyutl", "-verify", "-pubin", "-inkey", pem, "-in", fixture.file("message.sha384"), "-sigfile", sig],
  },
];

for (const c of cases) {
  test(`pkcs11-tool --keypairgen --key-type ${c.keyType}: new processes find it by label and sign by id, verified with the vault's JWK`, async (t) => {
    const made = await onVault(["--keypairgen", "--key-type", c.keyType, "--label", c.label, "--id", c.id]);
    t.is(made.code, 0, describe(made));

    // The label is a valid Key Vault name, so it is the key's name; its PKCS#11 identity lives in the tags.
    const { view, pem } = await vaultKey(c.label);
    t.notThrows(() => c.check(view));
    t.is(view.tags["p11_pri_CKA_LABEL"], c.label, JSON.stringify(view.tags));
    t.is(view.tags["p11_pri_CKA_ID"], c.id, JSON.stringify(view.tags));
    t.true(view.keyOps.includes("sign"), JSON.stringify(view.keyOps));

    // Found by CKA_LABEL in a new process. p11tool rather than `pkcs11-tool --read-object`, which OpenSC 0.23 with
    // OpenSSL 3 cannot do for a P-384 key ("cannot create EVP_PKEY", from a well-formed DER CKA_EC_POINT).
    const exported = await fixture.run("p11tool", ["--provider", fixture.modulePath, "--batch", "--export-pubkey",
      `pkcs11:token=${fixture.vault!.tokenLabel};object=${c.label};type=public`]);
    t.is(exported.code, 0, describe(exported));
    t.true(samePublicKey(createPublicKey(exported.stdout), view.publicKey), describe(exported));

    const sig = fixture.file(`${c.label}.sig`);
    const signed = await onVault(["--sign", "-m", c.mechanism, ...c.extra, "--id", c.id, "-i", fixture.file(c.input), "-o", sig]);
    t.is(signed.code, 0, describe(signed));
    const verified = await fixture.run("openssl", c.verify(pem, sig));
    t.is(verified.code, 0, describe(verified));
    t.regex(verified.stdout, /Verified OK|Signature Verified Successfully/, describe(verified));

    // The same signature does not verify for other data: the check can fail.
    await writeFile(fixture.file(`${c.label}.other`), createHash("sha384").update("other data").digest());
    const other = c.verify(pem, sig).map((arg) => (arg === fixture.file(c.input) ? fixture.file(`${c.label}.other`) : arg));
    t.not((await fixture.run("openssl", other)).code, 0);

    // A new process lists the pair under its label and id.
    const listed = await onVault(["-O"]);
    t.is(listed.code, 0, describe(listed));
    t.is([...listed.stdout.matchAll(new RegExp(`^\\s*label:\\s*${c.label}$`, "gm"))].length, 2, describe(listed));
    t.regex(listed.stdout, /Private Key Object/, describe(listed));
    t.regex(listed.stdout, /Public Key Object/, describe(listed));
  });
}
