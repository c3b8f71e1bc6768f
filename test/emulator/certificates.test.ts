// Self-signed certificates through the real CertificateClient: cer, kid, list, versions, and that each certificate
// holds the public key of the vault key of the same name and is signed by it (checked by node:crypto).
import test from "ava";
import { X509Certificate, createPublicKey } from "node:crypto";
import { CertificateClient } from "@azure/keyvault-certificates";
import { KeyClient } from "@azure/keyvault-keys";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";

let emulator: TestEmulator;
let certificates: CertificateClient;
let keys: KeyClient;

test.before(async () => {
  emulator = await startTestEmulator({ keys: "rsa-cert:RSA:2048,ec-cert:EC:P-256,p384-cert:EC:P-384,p521-cert:EC:P-521,k1-cert:EC:P-256K,no-cert:RSA:2048", certs: ["rsa-cert", "ec-cert", "p384-cert", "p521-cert", "k1-cert"] });
  certificates = new CertificateClient(emulator.url, emulator.credential(), emulator.clientOptions);
  keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
});
test.after.always(() => emulator?.close());

for (const name of ["rsa-cert", "ec-cert", "p384-cert", "p521-cert", "k1-cert"]) {
  test(`${name}: cer holds the key's public key, is self-signed by it, and kid names that key version`, async (t) => {
    const cert = await certificates.getCertificate(name);
    const key = await keys.getKey(name);
    t.is(cert.keyId, key.id);
    t.is(cert.properties.version, key.properties.version);
    const x509 = new X509Certificate(Buffer.from(cert.cer!));
    t.is(x509.subject, `CN=${name}`);
    t.is(x509.issuer, `CN=${name}`);
    const jwk = key.key!;
    const b = (v: Uint8Array | undefined) => Buffer.from(v!).toString("base64url");
    const fromJwk = createPublicKey({
      key: jwk.kty === "RSA" ? { kty: "RSA", n: b(jwk.n), e: b(jwk.e) } : { kty: "EC", crv: jwk.crv === "P-256K" ? "secp256k1" : jwk.crv!, x: b(jwk.x), y: b(jwk.y) },
      format: "jwk",
    });
    t.true(x509.publicKey.equals(fromJwk), "certificate public key = vault key");
    t.true(x509.verify(fromJwk), "signature over the certificate verifies with the vault key");
    t.deepEqual(Buffer.from(cert.properties.x509Thumbprint!), Buffer.from(x509.fingerprint.replace(/:/g, ""), "hex"));
  });
}

test("list, versions and get-by-version; a key without a certificate is 404 CertificateNotFound", async (t) => {
  const names: string[] = [];
  for await (const p of certificates.listPropertiesOfCertificates()) names.push(p.name!);
  for (const name of ["ec-cert", "k1-cert", "p384-cert", "p521-cert", "rsa-cert"]) t.true(names.includes(name), name);
  t.false(names.includes("no-cert"));
  const versions: string[] = [];
  for await (const p of certificates.listPropertiesOfCertificateVersions("rsa-cert")) versions.push(p.version!);
  t.is(versions.length, 1);
  const byVersion = await certificates.getCertificateVersion("rsa-cert", versions[0]!);
  t.is(byVersion.properties.version, versions[0]);
  const error = await t.throwsAsync(certificates.getCertificate("no-cert"));
  t.is((error as any).statusCode, 404);
  t.is((error as any).code, "CertificateNotFound");
});

test("addKey with certificate: true creates a new key and its certificate at run time", async (t) => {
  await emulator.addKey("late-cert:EC:P-256", { certificate: true });
  const cert = await certificates.getCertificate("late-cert");
  t.is(cert.keyId, (await keys.getKey("late-cert")).id);
});
