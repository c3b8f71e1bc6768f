// pkcs11-tool writing and destroying objects on a vault token (issue #10): a certificate for a generated key
// (--write-object --type cert), an RSA key made by openssl imported as a private key (--write-object --type privkey,
// which OpenSC 0.23 sends without CKA_COEFFICIENT), a key destroyed (--delete-object: soft-deleted, recoverable), and a
// generation under a name the vault already holds (refused, key unchanged). Each change is checked by a new process
// and through the vault's REST API; signatures are verified by openssl, never by the module.
import test from "ava";
import { createPublicKey } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { describe, samePublicKey, startClientFixture, type ClientFixture, type VaultKeyView } from "./harness.ts";

let fixture: ClientFixture;
const message = Buffer.from("azure-keyvault-pkcs11 client test: objects written with pkcs11-tool\n");

test.before(async () => {
  fixture = await startClientFixture({ vaultToken: true });
  await writeFile(fixture.file("message.bin"), message);
  // A test CA, to issue a certificate for a key whose private half only the vault holds.
  await fixture.runOk("openssl", ["req", "-new", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", fixture.file("ca.key"), "-subj", "/CN=keygen objects test CA", "-days", "2", "-out", fixture.file("ca.pem")]);
});

test.after.always(async () => {
  await fixture?.close();
});

function onVault(args: string[]) {
  return fixture.run("pkcs11-tool", ["--module", fixture.modulePath, "--token-label", fixture.vault!.tokenLabel, ...args]);
}

async function vaultKey(name: string): Promise<VaultKeyView> {
  const view = await fixture.vault!.key(name);
  if (!view) throw new Error(`the vault has no key ${name}`);
  return view;
}

/** pkcs11-tool -O's output cut into one block per object. */
async function listObjects(): Promise<string[]> {
  const listed = await onVault(["-O"]);
  if (listed.code !== 0) throw new Error(describe(listed));
  return listed.stdout.split(/^(?=\S.* Object;)/m).filter((block) => /Object;/.test(block));
}

const labelled = (blocks: string[], label: string) => blocks.filter((block) => new RegExp(`^\\s*label:\\s*${label}$`, "m").test(block));

test("pkcs11-tool --write-object --type cert binds a CA-issued certificate to a generated key, seen by a new process with the key's id; destroyed and written again, the new one is seen", async (t) => {
  const label = "obj-cert-rsa";
  const id = "c0ffee01";
  const made = await onVault(["--keypairgen", "--key-type", "rsa:2048", "--label", label, "--id", id]);
  t.is(made.code, 0, describe(made));
  const pub = fixture.file(`${label}.vault.pub.pem`);
  await writeFile(pub, (await vaultKey(label)).publicKey.export({ type: "spki", format: "pem" }));
  const cert = fixture.file(`${label}.cert.der`);
  await fixture.runOk("openssl", ["x509", "-new", "-CA", fixture.file("ca.pem"), "-CAkey", fixture.file("ca.key"), "-force_pubkey", pub,
    "-subj", `/CN=${label}`, "-days", "2", "-outform", "DER", "-out", cert]);

  const written = await onVault(["--write-object", cert, "--type", "cert", "--id", id]);
  t.is(written.code, 0, describe(written));

  const certificates = (await listObjects()).filter((block) => /^Certificate Object/.test(block) && new RegExp(`^\\s*ID:\\s*${id}$`, "m").test(block));
  t.is(certificates.length, 1, certificates.join("\n"));
  t.regex(certificates[0] ?? "", new RegExp(`subject:\\s*DN: CN=${label}`));
  const read = fixture.file(`${label}.token.cert.der`);
  const readBack = await onVault(["--read-object", "--type", "cert", "--id", id, "-o", read]);
  t.is(readBack.code, 0, describe(readBack));
  t.true((await readFile(read)).equals(await readFile(cert)), "the token's certificate is not the one written");

  // Replaced as keytool -importcert replaces it, destroy then create: the first secret is soft-deleted, and a
  // soft-deleted name cannot be set again, yet the new certificate must be stored.
  const destroyed = await onVault(["--delete-object", "--type", "cert", "--id", id]);
  t.is(destroyed.code, 0, describe(destroyed));
  t.deepEqual((await listObjects()).filter((block) => /^Certificate Object/.test(block) && new RegExp(`^\\s*ID:\\s*${id}$`, "m").test(block)), []);
  const renewed = fixture.file(`${label}.renewed.der`);
  await fixture.runOk("openssl", ["x509", "-new", "-CA", fixture.file("ca.pem"), "-CAkey", fixture.file("ca.key"), "-force_pubkey", pub,
    "-subj", `/CN=${label} renewed`, "-days", "2", "-outform", "DER", "-out", renewed]);
  const rewritten = await onVault(["--write-object", renewed, "--type", "cert", "--id", id]);
  t.is(rewritten.code, 0, describe(rewritten));
  const readAgain = await onVault(["--read-object", "--type", "cert", "--id", id, "-o", read]);
  t.is(readAgain.code, 0, describe(readAgain));
  t.true((await readFile(read)).equals(await readFile(renewed)), "the token's certificate is not the renewed one");
});

test("pkcs11-tool --write-object --type privkey imports an openssl RSA key; a new process lists it and signs, openssl verifies with the key's public half", async (t) => {
  const label = "obj-imported-rsa";
  const id = "1dbeef";
  const keyFile = fixture.file(`${label}.p8.der`);
  await fixture.runOk("openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-outform", "DER", "-out", keyFile]);
  const pub = fixture.file(`${label}.openssl.pub.pem`);
  await fixture.runOk("openssl", ["pkey", "-inform", "DER", "-in", keyFile, "-pubout", "-out", pub]);
  const opensslPublic = createPublicKey(await readFile(pub));

  const written = await onVault(["--write-object", keyFile, "--type", "privkey", "--id", id, "--label", label]);
  t.is(written.code, 0, describe(written));

  // The vault holds that key under its label, with the PKCS#11 identity in its tags.
  const view = await vaultKey(label);
  t.true(samePublicKey(view.publicKey, opensslPublic), "the vault's key is not the one imported");
  t.is(view.tags["p11_pri_CKA_LABEL"], label, JSON.stringify(view.tags));
  t.is(view.tags["p11_pri_CKA_ID"], id, JSON.stringify(view.tags));

  const blocks = labelled(await listObjects(), label);
  const privateKey = blocks.find((block) => /^Private Key Object; RSA/.test(block));
  t.truthy(privateKey, blocks.join("\n"));
  t.regex(privateKey ?? "", new RegExp(`^\\s*ID:\\s*${id}$`, "m"));
  // Imported: not extractable, but it has been outside the vault.
  t.notRegex(privateKey ?? "", /never extractable/);
  t.regex(privateKey ?? "", /Access:.*sensitive/);

  const sig = fixture.file(`${label}.sig`);
  const signed = await onVault(["--sign", "-m", "SHA256-RSA-PKCS", "--id", id, "-i", fixture.file("message.bin"), "-o", sig]);
  t.is(signed.code, 0, describe(signed));
  const verified = await fixture.run("openssl", ["dgst", "-sha256", "-verify", pub, "-signature", sig, fixture.file("message.bin")]);
  t.is(verified.code, 0, describe(verified));
  t.regex(verified.stdout, /Verified OK/, describe(verified));
  const wrongKey = await fixture.run("openssl", ["dgst", "-sha256", "-verify", fixture.rsa.publicKeyPath, "-signature", sig, fixture.file("message.bin")]);
  t.not(wrongKey.code, 0, describe(wrongKey));
});

test("pkcs11-tool --delete-object --type privkey soft-deletes the key: the vault shows it deleted and recoverable, a new process no longer lists it", async (t) => {
  const label = "obj-deleted";
  const made = await onVault(["--keypairgen", "--key-type", "rsa:2048", "--label", label, "--id", "de1e7e"]);
  t.is(made.code, 0, describe(made));
  const before = await vaultKey(label);
  t.is(labelled(await listObjects(), label).length, 2);

  const deleted = await onVault(["--delete-object", "--type", "privkey", "--label", label]);
  t.is(deleted.code, 0, describe(deleted));

  t.is(await fixture.vault!.key(label), undefined, "GET /keys/{name} still finds the key");
  const bundle = await fixture.vault!.deletedKey(label);
  t.truthy(bundle, "GET /deletedkeys/{name} does not find the key: purged, or never deleted");
  t.is((bundle?.key as { kid?: string } | undefined)?.kid, before.kid);
  t.is(typeof bundle?.recoveryId, "string");
  t.regex(String((bundle?.attributes as { recoveryLevel?: string } | undefined)?.recoveryLevel), /Recoverable/);
  t.deepEqual(labelled(await listObjects(), label), []);
});

test("pkcs11-tool --keypairgen under a name the vault holds fails and leaves the key as it was", async (t) => {
  // A key this test makes (tagged), the fixture's untagged rsa-key, and a soft-deleted name are all taken.
  const label = "obj-taken";
  const made = await onVault(["--keypairgen", "--key-type", "rsa:2048", "--label", label, "--id", "0a0a"]);
  t.is(made.code, 0, describe(made));
  for (const name of [label, fixture.rsa.keyName]) {
    const before = await vaultKey(name);
    const again = await onVault(["--keypairgen", "--key-type", "rsa:3072", "--label", name, "--id", "0b0b"]);
    t.not(again.code, 0, describe(again));
    t.regex(again.stderr, new RegExp(`'${name}' already exists`), describe(again));
    const after = await vaultKey(name);
    t.is(after.kid, before.kid, "the key got a new version");
    t.is(after.modulusBits, before.modulusBits);
    t.deepEqual(after.tags, before.tags);
  }
  const deletedName = "obj-taken-deleted";
  t.is((await onVault(["--keypairgen", "--key-type", "rsa:2048", "--label", deletedName])).code, 0);
  t.is((await onVault(["--delete-object", "--type", "privkey", "--label", deletedName])).code, 0);
  const reuse = await onVault(["--keypairgen", "--key-type", "rsa:2048", "--label", deletedName]);
  t.not(reuse.code, 0, describe(reuse));
  t.is(await fixture.vault!.key(deletedName), undefined, "the soft-deleted name was taken by a new key");
  t.truthy(await fixture.vault!.deletedKey(deletedName), "the soft-deleted key is gone");
});
