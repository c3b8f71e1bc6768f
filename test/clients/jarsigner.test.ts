// jarsigner (OpenJDK 17) through the SunPKCS11 provider: the certificate's CKA_LABEL is the key alias. The signed
// jar is checked by `jarsigner -verify` and, independently, by openssl cms against the vault's certificate.
import test from "ava";
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, startClientFixture, type ClientFixture, type ClientKey } from "./harness.ts";

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
async function slotOf(key: ClientKey): Promise<string> {
  const list = await fixture.runOk("pkcs11-tool", ["--module", fixture.modulePath, "-L"]);
  for (const block of list.stdout.split(/^(?=Slot \d+ )/m)) {
    const slot = /^Slot \d+ \((0x[0-9a-f]+)\)/.exec(block)?.[1];
    if (slot && new RegExp(`token label\\s*: ${key.tokenLabel}\\s*$`, "m").test(block)) return String(Number.parseInt(slot, 16));
  }
  throw new Error(`no slot holds token ${key.tokenLabel}:\n${list.stdout}`);
}

async function providerConfig(key: ClientKey): Promise<string> {
  const file = fixture.file(`sunpkcs11-${key.kind}.cfg`);
  await writeFile(file, `name = akv-${key.kind}\nlibrary = ${fixture.modulePath}\nslot = ${await slotOf(key)}\n`);
  return file;
}

/** The token needs no login; SunPKCS11 skips C_Login for a token without CKF_LOGIN_REQUIRED, whatever -storepass says. */
function keystoreArgs(config: string): string[] {
  return ["-keystore", "NONE", "-storetype", "PKCS11", "-addprovider", "SunPKCS11", "-providerArg", config, "-storepass", fixture.pin ?? "none"];
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
    const extracted = fixture.file(`extracted-${kind}`);
    await fixture.runOk("mkdir", ["-p", extracted]);
    await fixture.runOk("jar", ["xf", signed], { cwd: extracted });
    const metaInf = path.join(extracted, "META-INF");
    const files = await readdir(metaInf);
    const signatureFile = files.find((name) => name.endsWith(".SF"));
    const block = files.find((name) => /\.(RSA|EC)$/.test(name));
    t.truthy(signatureFile && block, files.join(", "));
    const cms = await fixture.run("openssl", [
      "cms", "-verify", "-inform", "DER", "-in", path.join(metaInf, block as string), "-content", path.join(metaInf, signatureFile as string),
      "-binary", "-CAfile", key.certificatePath, "-purpose", "any", "-out", "/dev/null",
    ]);
    t.is(cms.code, 0, describe(cms));
    t.regex(cms.stderr, /Verification successful/, describe(cms));
  });
}
