// sbsigntool: sbsign --engine pkcs11 signs a UEFI binary with the token's RSA key; sbverify checks it against the
// vault's certificate.
import test from "ava";
import { describe, startClientFixture, type ClientFixture } from "./harness.ts";

const unsignedPe = "/usr/lib/shim/shimx64.efi";
let fixture: ClientFixture;

test.before(async () => {
  fixture = await startClientFixture();
});

test.after.always(async () => {
  await fixture?.close();
});

test(`sbsign --engine pkcs11 signs ${unsignedPe} and sbverify --cert accepts it`, async (t) => {
  const key = fixture.rsa;
  // A Secure Boot db certificate for the token's key: sbverify accepts code-signing-only certificates.
  const certificate = await fixture.codeSigningCertificate(key);
  const signed = fixture.file("shimx64-sbsign.efi");
  const env = { ...fixture.env, OPENSSL_CONF: await fixture.opensslEngineConfig() };
  const sign = await fixture.run("sbsign", ["--engine", "pkcs11", "--key", key.privateKeyUriWithPin, "--cert", certificate, "--output", signed, unsignedPe], { env });
  t.is(sign.code, 0, describe(sign));
  const verify = await fixture.run("sbverify", ["--cert", certificate, signed]);
  t.is(verify.code, 0, describe(verify));
  t.regex(verify.stdout + verify.stderr, /Signature verification OK/, describe(verify));
  // The unsigned input must not pass: the verifier can fail.
  const unsigned = await fixture.run("sbverify", ["--cert", certificate, unsignedPe]);
  t.not(unsigned.code, 0, describe(unsigned));
  // A different certificate must not pass either.
  const wrongCert = await fixture.run("sbverify", ["--cert", fixture.ec.certificatePath, signed]);
  t.not(wrongCert.code, 0, describe(wrongCert));
});
