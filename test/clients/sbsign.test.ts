// sbsigntool: sbsign --engine pkcs11 signs a UEFI binary with the token's RSA key and the vault's certificate for it;
// sbverify checks it against that certificate. The vault's certificates here are code-signing-only, as a Secure Boot
// signing certificate made with such a policy is: sbverify refuses one that also names TLS usages.
import test from "ava";
import { describe, startClientFixture, type ClientFixture } from "./harness.ts";

const unsignedPe = "/usr/lib/shim/shimx64.efi";
const CODE_SIGNING = "1.3.6.1.5.5.7.3.3";
let fixture: ClientFixture;

test.before(async () => {
  fixture = await startClientFixture({ certificateUsage: "codeSigning" });
});

test.after.always(async () => {
  await fixture?.close();
});

test("the vault's certificate is code-signing-only and is the certificate the token shows", async (t) => {
  const key = fixture.rsa;
  t.deepEqual(key.certificate.keyUsage, [CODE_SIGNING]);
  const onToken = await fixture.tokenCertificate(key);
  t.true(onToken.raw.equals(key.certificate.raw), "the module exposes the vault's certificate for the key");
});

test(`sbsign --engine pkcs11 signs ${unsignedPe} and sbverify --cert accepts it`, async (t) => {
  const key = fixture.rsa;
  const certificate = key.certificatePath;
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
