// osslsigncode: Authenticode-sign a PE file (shim-unsigned's shimx64.efi) through the libp11 engine with the vault's
// certificate for the key, then check it with `osslsigncode verify` and, independently, with sbverify. The vault's
// certificates here are code-signing-only: sbverify refuses one that also names TLS usages.
import test from "ava";
import { describe, libp11EnginePath, startClientFixture, type ClientFixture } from "./harness.ts";

const unsignedPe = "/usr/lib/shim/shimx64.efi";
let fixture: ClientFixture;

test.before(async () => {
  fixture = await startClientFixture({ certificateUsage: "codeSigning" });
});

test.after.always(async () => {
  await fixture?.close();
});

for (const kind of ["rsa", "ec"] as const) {
  test(`osslsigncode signs ${unsignedPe} with the ${kind} key and the signature verifies`, async (t) => {
    const key = fixture[kind];
    const certificate = key.certificatePath;
    const signed = fixture.file(`shimx64-${kind}.efi`);
    const pass = fixture.pin === undefined ? [] : ["-pass", fixture.pin];
    const sign = await fixture.run("osslsigncode", [
      "sign", "-pkcs11engine", libp11EnginePath, "-pkcs11module", fixture.modulePath, "-certs", certificate,
      "-key", key.privateKeyUri, ...pass, "-h", "sha256", "-in", unsignedPe, "-out", signed,
    ]);
    t.is(sign.code, 0, describe(sign));
    t.regex(sign.stdout, /Succeeded/, describe(sign));
    const verify = await fixture.run("osslsigncode", ["verify", "-in", signed, "-CAfile", certificate]);
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /Signature verification: ok/, describe(verify));
    t.regex(verify.stdout, /Number of verified signatures: 1/, describe(verify));
    if (kind === "rsa") {
      // sbverify (sbsigntool) is a second, unrelated verifier; it handles RSA signatures only.
      const sbverify = await fixture.run("sbverify", ["--cert", certificate, signed]);
      t.is(sbverify.code, 0, describe(sbverify));
      t.regex(sbverify.stdout + sbverify.stderr, /Signature verification OK/, describe(sbverify));
    }
  });
}
