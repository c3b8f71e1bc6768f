// RAUC: build a bundle signed with the token's key (RAUC_PKCS11_MODULE), then check it with rauc info --keyring,
// using the vault's certificate as the keyring.
import test from "ava";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, startClientFixture, type ClientFixture, type ClientKey } from "./harness.ts";

let fixture: ClientFixture;
const CODE_SIGNING = "1.3.6.1.5.5.7.3.3";
const EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4";

test.before(async () => {
  fixture = await startClientFixture();
});

test.after.always(async () => {
  await fixture?.close();
});

/**
 * rauc checks the signer certificate's extended key usage: by default for S/MIME signing (emailProtection), or for
 * code signing with check-purpose=codesign. The purpose is chosen to match what the vault's certificate says it is
 * for; a certificate that names neither purpose is checked with check-purpose=any, which still verifies the chain
 * and the signature but not the purpose.
 */
function checkPurpose(key: ClientKey): string {
  const usages = key.certificate.keyUsage;
  if (usages === undefined || usages.length === 0) return "smimesign";
  if (usages.includes(CODE_SIGNING)) return "codesign";
  if (usages.includes(EMAIL_PROTECTION)) return "smimesign";
  return "any";
}

for (const kind of ["rsa", "ec"] as const) {
  test(`rauc bundle signs with the ${kind} key on the token and rauc info --keyring verifies it`, async (t) => {
    const key = fixture[kind];
    const input = fixture.file(`rauc-${kind}-input`);
    await fixture.runOk("mkdir", ["-p", input]);
    await writeFile(path.join(input, "rootfs.img"), `azure-keyvault-pkcs11 client test: rauc ${kind}\n`);
    await writeFile(
      path.join(input, "manifest.raucm"),
      `[update]\ncompatible=akv-client-test\nversion=1.0.0\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n`,
    );
    const bundle = fixture.file(`${kind}.raucb`);
    const env: NodeJS.ProcessEnv = { ...fixture.env, RAUC_PKCS11_MODULE: fixture.modulePath };
    if (fixture.pin !== undefined) env.RAUC_PKCS11_PIN = fixture.pin;
    const build = await fixture.run("rauc", ["bundle", `--cert=${key.certificatePath}`, `--key=${key.privateKeyUri}`, input, bundle], { env, timeoutMs: 90_000 });
    t.is(build.code, 0, describe(build));

    const systemConf = fixture.file(`rauc-${kind}-system.conf`);
    await writeFile(
      systemConf,
      `[system]\ncompatible=akv-client-test\nbootloader=noop\n\n[keyring]\npath=${key.certificatePath}\ncheck-purpose=${checkPurpose(key)}\n`,
    );
    const info = await fixture.run("rauc", [`--conf=${systemConf}`, "info", `--keyring=${key.certificatePath}`, bundle], { timeoutMs: 60_000 });
    t.is(info.code, 0, describe(info));
    t.regex(info.stdout, /Compatible:\s*'akv-client-test'/, describe(info));
    t.regex(info.stdout + info.stderr, /Verified (detached|inline) signature by/, describe(info));
    t.notRegex(info.stdout + info.stderr, /skipping signature verification/i, describe(info));

    // The other key's certificate must not verify this bundle: the check can fail.
    const other = fixture[kind === "rsa" ? "ec" : "rsa"];
    const wrong = await fixture.run("rauc", [`--conf=${systemConf}`, "info", `--keyring=${other.certificatePath}`, bundle], { timeoutMs: 60_000 });
    t.not(wrong.code, 0, describe(wrong));
  });
}
