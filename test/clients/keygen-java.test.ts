// Java on a vault token (issue #10), through SunPKCS11 (OpenJDK 17): keytool -genkeypair makes the key in the vault
// (with `attributes(generate, *, *) = { CKA_TOKEN = true }`, SunPKCS11 otherwise asks for session keys) and stores a
// self-signed certificate for it; keytool -certreq, openssl signs the CSR as a test CA, and keytool -importcert of
// the reply replaces the certificate and stores the CA certificate as an object of its own. Then in new JVMs
// jarsigner signs with the certificate from the token and jarsigner -verify passes; openssl cms checks the
// signature block up to the test CA, and the signer's key is the vault's JWK.
import test from "ava";
import { X509Certificate } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, samePublicKey, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;
const JAVA_TIMEOUT_MS = 90_000;

test.before(async () => {
  fixture = await startClientFixture({ vaultToken: true });
  await fixture.runOk("openssl", ["req", "-new", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", fixture.file("ca.key"), "-subj", "/O=azure-keyvault-pkcs11 client test/CN=keytool test CA", "-days", "2",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", "-out", fixture.file("ca.pem")]);
  await writeFile(fixture.file("leaf.ext"), "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = codeSigning\n");
  const content = fixture.file("jar-content");
  await fixture.runOk("mkdir", ["-p", content]);
  await writeFile(path.join(content, "hello.txt"), "azure-keyvault-pkcs11 client test: a key made with keytool\n");
  await fixture.runOk("jar", ["cf", fixture.file("unsigned.jar"), "-C", content, "."]);
});

test.after.always(async () => {
  await fixture?.close();
});

/** SunPKCS11 wants the slot's ID, which pkcs11-tool -L prints in hex (not its index). */
async function vaultSlotId(): Promise<string> {
  const list = await fixture.runOk("pkcs11-tool", ["--module", fixture.modulePath, "-L"]);
  for (const block of list.stdout.split(/^(?=Slot \d+ )/m)) {
    const slot = /^Slot \d+ \((0x[0-9a-f]+)\)/.exec(block)?.[1];
    if (slot && new RegExp(`token label\\s*: ${fixture.vault!.tokenLabel}\\s*$`, "m").test(block)) return String(Number.parseInt(slot, 16));
  }
  throw new Error(`no slot holds token ${fixture.vault!.tokenLabel}:\n${list.stdout}`);
}

async function providerConfig(): Promise<string> {
  const file = fixture.file("sunpkcs11-vault.cfg");
  await writeFile(file, `name = akv-vault\nlibrary = ${fixture.modulePath}\nslot = ${await vaultSlotId()}\n` +
    "attributes(generate, *, *) = {\n  CKA_TOKEN = true\n}\n");
  return file;
}

function keystoreArgs(config: string): string[] {
  return ["-keystore", "NONE", "-storetype", "PKCS11", "-addprovider", "SunPKCS11", "-providerArg", config, "-storepass", "none"];
}

const java = (tool: string, args: string[]) => fixture.run(tool, args, { timeoutMs: JAVA_TIMEOUT_MS });

for (const { kind, keytoolArgs } of [
  { kind: "ec", keytoolArgs: ["-keyalg", "EC", "-groupname", "secp256r1", "-sigalg", "SHA256withECDSA"] },
  { kind: "rsa", keytoolArgs: ["-keyalg", "RSA", "-keysize", "3072", "-sigalg", "SHA256withRSA"] },
]) {
  // Serial: each test's JVMs load the whole token while the other's keytool -importcert replaces a certificate; a
  // JVM that listed the old certificate then shows that key without one (VaultToken.certificateOf), which is right,
  // but would make the other test's chain checks depend on timing.
  test.serial(`keytool -genkeypair (${kind}), -certreq, -importcert of the CA's reply; jarsigner in a new JVM signs with the token's certificate`, async (t) => {
    const alias = `java-${kind}`;
    const config = await providerConfig();
    const keystore = keystoreArgs(config);

    const generated = await java("keytool", ["-genkeypair", ...keystore, "-alias", alias, ...keytoolArgs, "-dname", `CN=${alias}`, "-validity", "2"]);
    t.is(generated.code, 0, describe(generated));

    const csr = fixture.file(`${alias}.csr`);
    const request = await java("keytool", ["-certreq", ...keystore, "-alias", alias, "-file", csr]);
    t.is(request.code, 0, describe(request));
    const leafPath = fixture.file(`${alias}.pem`);
    const issued = await fixture.run("openssl", ["x509", "-req", "-in", csr, "-CA", fixture.file("ca.pem"), "-CAkey", fixture.file("ca.key"),
      "-days", "2", "-extfile", fixture.file("leaf.ext"), "-out", leafPath]);
    t.is(issued.code, 0, describe(issued));
    const leaf = new X509Certificate(await readFile(leafPath));

    // The CSR's key is the one the vault made: find it among the vault's keys by the key the CA certified.
    const listed = await fixture.runOk("pkcs11-tool", ["--module", fixture.modulePath, "--token-label", fixture.vault!.tokenLabel, "-O"]);
    const names = [...listed.stdout.matchAll(/^\s*label:\s*(\S+)$/gm)].map((match) => match[1] as string);
    let vaultKeyName: string | undefined;
    for (const name of new Set(names)) {
      const view = await fixture.vault!.key(name);
      if (view && samePublicKey(view.publicKey, leaf.publicKey)) vaultKeyName = name;
    }
    t.truthy(vaultKeyName, `no vault key has the CSR's public key (token labels: ${[...new Set(names)].join(", ")})`);

    const reply = fixture.file(`${alias}.reply.pem`);
    await writeFile(reply, `${leaf.toString()}${await readFile(fixture.file("ca.pem"), "utf8")}`);
    // -noprompt: the test CA is in no trust store, and keytool would ask whether to install the reply anyway.
    const imported = await java("keytool", ["-importcert", "-noprompt", ...keystore, "-alias", alias, "-file", reply]);
    t.is(imported.code, 0, describe(imported));
    t.regex(imported.stdout + imported.stderr, /Certificate reply was installed in keystore/, describe(imported));

    // A new JVM: the chain comes from the token (the key's certificate and the CA certificate object).
    const entry = await java("keytool", ["-list", "-v", ...keystore, "-alias", alias]);
    t.is(entry.code, 0, describe(entry));
    t.regex(entry.stdout, /^Entry type: PrivateKeyEntry$/m, describe(entry));
    t.regex(entry.stdout, /^Certificate chain length: 2$/m, describe(entry));
    const certificates = await fixture.runOk("pkcs11-tool", ["--module", fixture.modulePath, "--token-label", fixture.vault!.tokenLabel, "-O"]);
    t.regex(certificates.stdout, new RegExp(`subject:\\s*DN: CN=${alias}\\b`), describe(certificates));
    t.regex(certificates.stdout, /subject:\s*DN: O=azure-keyvault-pkcs11 client test, CN=keytool test CA/, describe(certificates));

    const signedJar = fixture.file(`${alias}.signed.jar`);
    const signed = await java("jarsigner", [...keystore, "-signedjar", signedJar, fixture.file("unsigned.jar"), alias]);
    t.is(signed.code, 0, describe(signed));
    t.regex(signed.stdout, /jar signed\./, describe(signed));
    const verified = await java("jarsigner", ["-verify", "-verbose", "-certs", signedJar]);
    t.is(verified.code, 0, describe(verified));
    t.regex(verified.stdout, /jar verified\./, describe(verified));
    t.regex(verified.stdout, new RegExp(`CN=${alias}\\b`), describe(verified));

    // Independently: the signature block over the .SF file verifies up to the test CA, and not to another CA.
    const extracted = fixture.file(`${alias}-extracted`);
    await fixture.runOk("mkdir", ["-p", extracted]);
    await fixture.runOk("jar", ["xf", signedJar], { cwd: extracted });
    const metaInf = path.join(extracted, "META-INF");
    const files = await readdir(metaInf);
    const signatureFile = files.find((name) => name.endsWith(".SF"));
    const block = files.find((name) => /\.(RSA|EC)$/.test(name));
    if (!signatureFile || !block) return t.fail(`no .SF and .RSA/.EC pair in META-INF: ${files.join(", ")}`);
    const cms = (caFile: string) => fixture.run("openssl", ["cms", "-verify", "-inform", "DER", "-in", path.join(metaInf, block),
      "-content", path.join(metaInf, signatureFile), "-binary", "-CAfile", caFile, "-purpose", "any", "-out", "/dev/null"]);
    const good = await cms(fixture.file("ca.pem"));
    t.is(good.code, 0, describe(good));
    t.regex(good.stderr, /Verification successful/, describe(good));
    t.not((await cms(fixture.rsa.certificatePath)).code, 0, "the block verified against a CA that did not issue its signer");
  });
}
