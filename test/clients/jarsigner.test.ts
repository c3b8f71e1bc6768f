// jarsigner (OpenJDK 17) through the SunPKCS11 provider: the certificate's CKA_LABEL is the key alias. The signed
// jar is checked by `jarsigner -verify` and, independently, by openssl cms against the vault's certificate.
// A second test gives the slot a PEM chain (leaf + intermediate, issued here by a two-level openssl CA for the
// vault key's public key): SunPKCS11 builds the signer's chain from the token's certificates by issuer name, so the
// signature block must carry the intermediate, and openssl must verify it up to the root from the block alone.
import test from "ava";
import { X509Certificate } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, samePublicKey, startClientFixture, type ClientFixture, type ClientKey } from "./harness.ts";

let fixture: ClientFixture;
let unsignedJar: string;

test.before(async () => {
  fixture = await startClientFixture();
  const content = fixture.file("jar-content");
  await fixture.runOk("mkdir", ["-p", content]);
  await writeFile(path.join(content, "hello.txt"), "azure-keyvault-pkcs11 client test: jarsigner\n");
  unsignedJar = fixture.file("unsigned.jar");
  await fixture.runOk("jar", ["cf", unsignedJar, "-C", content, "."]);
});

test.after.always(async () => {
  await fixture?.close();
});

/** The slot id holding the key's token, as pkcs11-tool -L reports it; SunPKCS11 selects a token by slot. */
async function slotOf(key: ClientKey, env: NodeJS.ProcessEnv = fixture.env): Promise<string> {
  const list = await fixture.runOk("pkcs11-tool", ["--module", fixture.modulePath, "-L"], { env });
  for (const block of list.stdout.split(/^(?=Slot \d+ )/m)) {
    const slot = /^Slot \d+ \((0x[0-9a-f]+)\)/.exec(block)?.[1];
    if (slot && new RegExp(`token label\\s*: ${key.tokenLabel}\\s*$`, "m").test(block)) return String(Number.parseInt(slot, 16));
  }
  throw new Error(`no slot holds token ${key.tokenLabel}:\n${list.stdout}`);
}

async function providerConfig(key: ClientKey, env: NodeJS.ProcessEnv = fixture.env, name = `akv-${key.kind}`): Promise<string> {
  const file = fixture.file(`sunpkcs11-${name}.cfg`);
  await writeFile(file, `name = ${name}\nlibrary = ${fixture.modulePath}\nslot = ${await slotOf(key, env)}\n`);
  return file;
}

/** The token needs no login; SunPKCS11 skips C_Login for a token without CKF_LOGIN_REQUIRED, whatever -storepass says. */
function keystoreArgs(config: string): string[] {
  return ["-keystore", "NONE", "-storetype", "PKCS11", "-addprovider", "SunPKCS11", "-providerArg", config, "-storepass", fixture.pin ?? "none"];
}

/** Unpacks a signed jar; returns the paths of its signature file (.SF) and PKCS#7 signature block (.RSA or .EC). */
async function signatureFiles(signedJar: string, folderName: string): Promise<{ signatureFile: string; block: string; names: string[] }> {
  const extracted = fixture.file(folderName);
  await fixture.runOk("mkdir", ["-p", extracted]);
  await fixture.runOk("jar", ["xf", signedJar], { cwd: extracted });
  const metaInf = path.join(extracted, "META-INF");
  const names = await readdir(metaInf);
  const signatureFile = names.find((name) => name.endsWith(".SF"));
  const block = names.find((name) => /\.(RSA|EC)$/.test(name));
  if (!signatureFile || !block) throw new Error(`no .SF and .RSA/.EC pair in META-INF: ${names.join(", ")}`);
  return { signatureFile: path.join(metaInf, signatureFile), block: path.join(metaInf, block), names };
}

/** openssl cms -verify of a jar's signature block over its .SF file; purpose any, as the leaf names code signing. */
function verifyBlock(files: { signatureFile: string; block: string }, caFile: string) {
  return fixture.run("openssl", [
    "cms", "-verify", "-inform", "DER", "-in", files.block, "-content", files.signatureFile,
    "-binary", "-CAfile", caFile, "-purpose", "any", "-out", "/dev/null",
  ]);
}

for (const kind of ["rsa", "ec"] as const) {
  test(`jarsigner signs a jar with the ${kind} key through SunPKCS11 and the signature verifies`, async (t) => {
    const key = fixture[kind];
    const config = await providerConfig(key);
    const list = await fixture.run("keytool", ["-list", ...keystoreArgs(config)], { timeoutMs: 90_000 });
    t.is(list.code, 0, describe(list));
    t.regex(list.stdout, new RegExp(`^${key.keyName}, PrivateKeyEntry`, "m"), describe(list));

    const signed = fixture.file(`signed-${kind}.jar`);
    const sign = await fixture.run("jarsigner", [...keystoreArgs(config), "-signedjar", signed, unsignedJar, key.keyName], { timeoutMs: 90_000 });
    t.is(sign.code, 0, describe(sign));
    t.regex(sign.stdout, /jar signed\./, describe(sign));

    const verify = await fixture.run("jarsigner", ["-verify", "-verbose", "-certs", signed], { timeoutMs: 90_000 });
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /jar verified\./, describe(verify));

    // Independent check: the PKCS#7 signature block over the .SF file, verified by openssl with the vault's certificate.
    const files = await signatureFiles(signed, `extracted-${kind}`);
    const cms = await verifyBlock(files, key.certificatePath);
    t.is(cms.code, 0, describe(cms));
    t.regex(cms.stderr, /Verification successful/, describe(cms));
  });
}

interface TestCa {
  rootPath: string;
  /** A self-signed CA with the root's subject name but another key: a chain check must refuse it as the anchor. */
  impostorRootPath: string;
  intermediate: X509Certificate;
  intermediatePath: string;
  intermediateKeyPath: string;
}

const ROOT_SUBJECT = "/O=azure-keyvault-pkcs11 client test/CN=Chain Test Root CA";
const INTERMEDIATE_SUBJECT = "/O=azure-keyvault-pkcs11 client test/CN=Chain Test Intermediate CA";

let caPromise: Promise<TestCa> | undefined;

/** A root and an intermediate CA (EC P-256 keys) made with openssl in the fixture's folder, once per run. */
function testCa(): Promise<TestCa> {
  caPromise ??= (async () => {
    const dir = fixture.file("chain-ca");
    await fixture.runOk("mkdir", ["-p", dir]);
    const at = (name: string): string => path.join(dir, name);
    await writeFile(at("root.ext"), "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n");
    await writeFile(
      at("intermediate.ext"),
      "basicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n" +
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    );
    const newKey = (file: string) => fixture.runOk("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file]);
    for (const root of ["root", "impostor-root"]) {
      await newKey(at(`${root}.key`));
      await fixture.runOk("openssl", ["x509", "-new", "-key", at(`${root}.key`), "-subj", ROOT_SUBJECT, "-days", "30", "-extfile", at("root.ext"), "-out", at(`${root}.pem`)]);
    }
    await newKey(at("intermediate.key"));
    await fixture.runOk("openssl", ["pkey", "-in", at("intermediate.key"), "-pubout", "-out", at("intermediate.pub.pem")]);
    await fixture.runOk("openssl", [
      "x509", "-new", "-force_pubkey", at("intermediate.pub.pem"), "-subj", INTERMEDIATE_SUBJECT,
      "-CA", at("root.pem"), "-CAkey", at("root.key"), "-days", "30", "-extfile", at("intermediate.ext"), "-out", at("intermediate.pem"),
    ]);
    return {
      rootPath: at("root.pem"),
      impostorRootPath: at("impostor-root.pem"),
      intermediate: new X509Certificate(await readFile(at("intermediate.pem"))),
      intermediatePath: at("intermediate.pem"),
      intermediateKeyPath: at("intermediate.key"),
    };
  })();
  return caPromise;
}

/**
 * A code-signing certificate for the vault key's public key issued by the intermediate, chain.pem = leaf +
 * intermediate, and a copy of the fixture's config.json whose slot for the key points certificate_path at it.
 * The root stays out of chain.pem, as in what a CA hands out: a verifier must hold the root as its own trust anchor,
 * and leaving it out shows the verifier below gets the intermediate from the signature block.
 */
async function chainConfig(key: ClientKey, ca: TestCa): Promise<{ env: NodeJS.ProcessEnv; leaf: X509Certificate }> {
  const leafExt = fixture.file(`chain-leaf-${key.kind}.ext`);
  await writeFile(
    leafExt,
    "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = codeSigning\n" +
      "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
  );
  const leafPath = fixture.file(`chain-leaf-${key.kind}.pem`);
  await fixture.runOk("openssl", [
    "x509", "-new", "-force_pubkey", key.publicKeyPath, "-subj", `/O=azure-keyvault-pkcs11 client test/CN=${key.keyName} chain signer`,
    "-CA", ca.intermediatePath, "-CAkey", ca.intermediateKeyPath, "-days", "30", "-extfile", leafExt, "-out", leafPath,
  ]);
  const leaf = new X509Certificate(await readFile(leafPath));
  const chainPath = fixture.file(`chain-${key.kind}.pem`);
  await writeFile(chainPath, `${leaf.toString()}${ca.intermediate.toString()}`);

  const baseConfigPath = fixture.env.AZURE_KEYVAULT_PKCS11_CONFIG as string;
  const config = JSON.parse(await readFile(baseConfigPath, "utf8")) as { slots: Array<Record<string, unknown>> };
  const slot = config.slots.find((entry) => entry.key_name === key.keyName);
  if (!slot) throw new Error(`${baseConfigPath} has no slot for ${key.keyName}`);
  slot.certificate_path = chainPath;
  const configPath = fixture.file(`config-chain-${key.kind}.json`);
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`);
  return { env: { ...fixture.env, AZURE_KEYVAULT_PKCS11_CONFIG: configPath }, leaf };
}

/** The certificates of a DER PKCS#7 signature block, as openssl lists them. */
async function blockCertificates(block: string): Promise<X509Certificate[]> {
  const printed = await fixture.runOk("openssl", ["pkcs7", "-inform", "DER", "-in", block, "-print_certs"]);
  const pems = printed.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return pems.map((pem) => new X509Certificate(pem));
}

// A feature of this module's config.json, so these tests exist only against the module: the SoftHSM backend, which
// only debugs the commands of the other tests, has no config.json to put a chain in.
const chainKinds = process.env.AKV_CLIENT_TESTS_BACKEND === "softhsm" ? [] : (["rsa", "ec"] as const);

for (const kind of chainKinds) {
  test(`jarsigner puts the intermediate from a PEM chain in certificate_path into the ${kind} signature block`, async (t) => {
    const key = fixture[kind];
    const ca = await testCa();
    const { env, leaf } = await chainConfig(key, ca);
    t.true(samePublicKey(leaf.publicKey, key.publicKey), "the leaf certifies the vault key's public key");

    const config = await providerConfig(key, env, `akv-chain-${kind}`);
    const list = await fixture.run("keytool", ["-list", "-v", "-alias", key.keyName, ...keystoreArgs(config)], { env, timeoutMs: 90_000 });
    t.is(list.code, 0, describe(list));
    t.regex(list.stdout, /^Entry type: PrivateKeyEntry$/m, describe(list));
    t.regex(list.stdout, /^Certificate chain length: 2$/m, describe(list));

    const signed = fixture.file(`signed-chain-${kind}.jar`);
    const sign = await fixture.run("jarsigner", [...keystoreArgs(config), "-signedjar", signed, unsignedJar, key.keyName], { env, timeoutMs: 90_000 });
    t.is(sign.code, 0, describe(sign));
    t.regex(sign.stdout, /jar signed\./, describe(sign));

    const verify = await fixture.run("jarsigner", ["-verify", "-verbose", "-certs", signed], { timeoutMs: 90_000 });
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /jar verified\./, describe(verify));
    t.regex(verify.stdout, /CN="?Chain Test Intermediate CA/, describe(verify));

    // Independent checks with openssl: the block holds exactly the leaf and the intermediate (the certificates field
    // is a DER SET OF, which Java writes sorted by encoding, so their order means nothing)...
    const files = await signatureFiles(signed, `extracted-chain-${kind}`);
    const certificates = await blockCertificates(files.block);
    const printed = certificates.map((certificate) => certificate.toString()).join("");
    t.deepEqual(certificates.map((certificate) => certificate.subject).sort(), [leaf.subject, ca.intermediate.subject].sort(), printed);
    const blockLeaf = certificates.find((certificate) => certificate.raw.equals(leaf.raw));
    t.truthy(blockLeaf, `the block lacks the configured leaf:\n${printed}`);
    t.true(blockLeaf !== undefined && samePublicKey(blockLeaf.publicKey, key.publicKey), "the block's leaf holds the vault key");
    t.true(certificates.some((certificate) => certificate.raw.equals(ca.intermediate.raw)), `the block lacks the intermediate:\n${printed}`);

    // ...the signature over the .SF verifies up to the root, which is given only as the anchor (the intermediate
    // comes from the block)...
    const cms = await verifyBlock(files, ca.rootPath);
    t.is(cms.code, 0, describe(cms));
    t.regex(cms.stderr, /Verification successful/, describe(cms));

    // ...and not up to a root of the same name with another key, so the chain really was checked.
    const impostor = await verifyBlock(files, ca.impostorRootPath);
    t.not(impostor.code, 0, describe(impostor));
    t.regex(impostor.stderr, /certificate verify error|signature failure/i, describe(impostor));
  });
}
