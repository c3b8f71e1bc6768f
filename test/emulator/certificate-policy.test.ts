// Certificate creation with a policy through the real CertificateClient (beginCreateCertificate, the pending
// operation its poller reads, getCertificatePolicy), and the --certs NAME:USAGES start-up shorthand. The extensions
// are read back from the DER with @peculiar/x509 and node:crypto, the key from the vault's JWK.
import test from "ava";
import { X509Certificate, createPublicKey, type KeyObject } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { CertificateClient, type CertificatePolicy } from "@azure/keyvault-certificates";
import { KeyClient, type JsonWebKey } from "@azure/keyvault-keys";
import { parseEmulatorArgs } from "../../src/emulator/cli.ts";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { raw } from "./raw.ts";

const CODE_SIGNING = "1.3.6.1.5.5.7.3.3";
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

let emulator: TestEmulator;
let certificates: CertificateClient;
let keys: KeyClient;

test.before(async () => {
  emulator = await startTestEmulator({
    keys: "tls-default:RSA:2048,uefi-start:RSA:2048,ec-start:EC:P-256,mixed-a:EC:P-256,mixed-b:RSA:2048",
    certs: ["tls-default", "uefi-start:codeSigning", "ec-start:serverAuth+1.3.6.1.5.5.7.3.4"],
  });
  certificates = new CertificateClient(emulator.url, emulator.credential(), emulator.clientOptions);
  keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
});
test.after.always(() => emulator?.close());

function publicKeyOfJwk(jwk: JsonWebKey): KeyObject {
  const b = (v: Uint8Array | undefined) => Buffer.from(v!).toString("base64url");
  return createPublicKey({
    key: jwk.kty!.startsWith("RSA") ? { kty: "RSA", n: b(jwk.n), e: b(jwk.e) } : { kty: "EC", crv: jwk.crv === "P-256K" ? "secp256k1" : jwk.crv!, x: b(jwk.x), y: b(jwk.y) },
    format: "jwk",
  });
}

function ekusOf(der: Uint8Array): string[] | undefined {
  const usages = new x509.X509Certificate(der).getExtension(x509.ExtendedKeyUsageExtension)?.usages;
  return usages && Array.from(usages, String);
}

/** Fetches the certificate and its key; checks they are one version and that the key signed the certificate. */
async function certificateAndKey(t: import("ava").ExecutionContext, name: string): Promise<X509Certificate> {
  const certificate = await certificates.getCertificate(name);
  const key = await keys.getKey(name);
  t.is(certificate.keyId, key.id, "kid names the key version of the certificate");
  t.is(certificate.properties.version, key.properties.version);
  const cert = new X509Certificate(Buffer.from(certificate.cer!));
  const vaultKey = publicKeyOfJwk(key.key!);
  t.true(cert.publicKey.equals(vaultKey), "certificate public key = the vault key's JWK");
  t.true(cert.verify(vaultKey), "the vault key signed the certificate");
  return cert;
}

test("beginCreateCertificate with ekus [codeSigning]: the certificate names code signing only and holds the key's public key", async (t) => {
  const policy: CertificatePolicy = {
    issuerName: "Self",
    subject: "CN=Secure Boot signer, O=Example",
    enhancedKeyUsage: [CODE_SIGNING],
    keyUsage: ["digitalSignature"],
    keyType: "RSA",
    keySize: 3072,
    exportable: false,
    validityInMonths: 24,
  };
  const poller = await certificates.beginCreateCertificate("uefi-signer", policy, { intervalInMs: 10 });
  const created = await poller.pollUntilDone();
  t.true(poller.getOperationState().isCompleted);
  t.truthy(created.cer);

  const cert = await certificateAndKey(t, "uefi-signer");
  t.deepEqual(ekusOf(cert.raw), [CODE_SIGNING]);
  t.is(cert.subject, "CN=Secure Boot signer\nO=Example");
  t.is(cert.issuer, cert.subject, "self-signed");
  t.is(cert.publicKey.asymmetricKeyDetails?.modulusLength, 3072);
  const keyUsage = new x509.X509Certificate(cert.raw).getExtension(x509.KeyUsagesExtension);
  t.is(keyUsage?.usages, x509.KeyUsageFlags.digitalSignature);
  t.true(keyUsage?.critical);
  const months = (new Date(cert.validTo).getTime() - new Date(cert.validFrom).getTime()) / (30.44 * 86_400_000);
  t.true(months > 23.5 && months < 24.5, `validity ${months.toFixed(1)} months`);

  const read = await certificates.getCertificatePolicy("uefi-signer");
  t.is(read.issuerName, "Self");
  t.is(read.subject, "CN=Secure Boot signer, O=Example");
  t.deepEqual(read.enhancedKeyUsage, [CODE_SIGNING]);
  t.deepEqual(read.keyUsage, ["digitalSignature"]);
  t.is(read.keyType, "RSA");
  t.is(read.keySize, 3072);
  t.is(read.exportable, false);
  t.is(read.validityInMonths, 24);
});

test("an EC policy with the SDK's default subject makes a P-384 key, and the service's default usages", async (t) => {
  const poller = await certificates.beginCreateCertificate("ec-default", { issuerName: "Self", subject: "cn=MyCert", keyType: "EC", keyCurveName: "P-384" }, { intervalInMs: 10 });
  await poller.pollUntilDone();
  const cert = await certificateAndKey(t, "ec-default");
  t.is(cert.subject, "CN=MyCert");
  t.is(cert.publicKey.asymmetricKeyDetails?.namedCurve, "secp384r1");
  t.deepEqual(ekusOf(cert.raw), [SERVER_AUTH, CLIENT_AUTH]);
  const read = await certificates.getCertificatePolicy("ec-default");
  t.is(read.keyCurveName, "P-384");
  t.deepEqual(read.enhancedKeyUsage, [SERVER_AUTH, CLIENT_AUTH]);
});

test("a second create makes a new version of both key and certificate; without a policy it repeats the last one", async (t) => {
  await (await certificates.beginCreateCertificate("rotating", { issuerName: "Self", subject: "CN=rotating", enhancedKeyUsage: [CODE_SIGNING] }, { intervalInMs: 10 })).pollUntilDone();
  const first = await certificates.getCertificate("rotating");
  const token = (await emulator.credential().getToken("https://vault.azure.net/.default"))!.token;
  const again = await raw(`${emulator.url}/certificates/rotating/create?api-version=7.5`, {
    ca: emulator.caPem,
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
  t.is(again.status, 202, again.text);
  const second = await certificateAndKey(t, "rotating");
  const latest = await certificates.getCertificate("rotating");
  t.not(latest.properties.version, first.properties.version);
  t.false(Buffer.from(latest.cer!).equals(Buffer.from(first.cer!)));
  t.deepEqual(ekusOf(second.raw), [CODE_SIGNING]);
  const versions: string[] = [];
  for await (const p of certificates.listPropertiesOfCertificateVersions("rotating")) versions.push(p.version!);
  t.deepEqual(versions, [first.properties.version!, latest.properties.version!]);
});

test("create answers 202 inProgress with a CSR and Location; the pending operation then reads completed with target", async (t) => {
  const token = (await emulator.credential().getToken("https://vault.azure.net/.default"))!.token;
  const authorization = { authorization: `Bearer ${token}` };
  const body = JSON.stringify({ policy: { key_props: { kty: "RSA", key_size: 2048 }, x509_props: { subject: "CN=rest", ekus: [CODE_SIGNING] }, issuer: { name: "Self" } } });
  const created = await raw(`${emulator.url}/certificates/rest-made/create?api-version=7.5`, {
    ca: emulator.caPem,
    method: "POST",
    headers: { ...authorization, "content-type": "application/json" },
    body,
  });
  t.is(created.status, 202, created.text);
  const operation = JSON.parse(created.text) as Record<string, unknown>;
  t.is(operation.id, `${emulator.url}/certificates/rest-made/pending`);
  t.is(operation.status, "inProgress");
  t.deepEqual(operation.issuer, { name: "Self" });
  t.regex(String(created.headers.location), new RegExp(`^${emulator.url}/certificates/rest-made/pending\\?api-version=7\\.5&request_id=${operation.request_id as string}$`));
  const csr = new x509.Pkcs10CertificateRequest(Buffer.from(operation.csr as string, "base64"));
  t.is(csr.subject, "CN=rest");
  t.true(await csr.verify(), "the CSR is signed by its own key");

  const pending = await raw(`${emulator.url}/certificates/rest-made/pending?api-version=7.5`, { ca: emulator.caPem, headers: authorization });
  t.is(pending.status, 200);
  const completed = JSON.parse(pending.text) as Record<string, unknown>;
  t.is(completed.status, "completed");
  t.is(completed.target, `${emulator.url}/certificates/rest-made`);
  t.is(completed.request_id, operation.request_id);
  const certificate = new X509Certificate(Buffer.from((await certificates.getCertificate("rest-made")).cer!));
  t.true(Buffer.from(csr.publicKey.rawData).equals(certificate.publicKey.export({ type: "spki", format: "der" })), "the CSR and the certificate carry one key");

  const none = await raw(`${emulator.url}/certificates/tls-default/pending?api-version=7.5`, { ca: emulator.caPem, headers: authorization });
  t.is(none.status, 404);
  t.is((JSON.parse(none.text) as { error: { code: string } }).error.code, "PendingCertificateNotFound");
});

for (const [label, policy, pattern] of [
  ["an issuer other than Self", { issuerName: "DigiCert", subject: "CN=x" }, /Issuer 'DigiCert'/],
  ["an exportable key", { issuerName: "Self", subject: "CN=x", exportable: true }, /exportable/],
  ["an oct key", { issuerName: "Self", subject: "CN=x", keyType: "oct" }, /kty/],
  ["an unknown key usage", { issuerName: "Self", subject: "CN=x", keyUsage: ["signEverything"] }, /key_usage/],
  ["an EKU that is not an OID", { issuerName: "Self", subject: "CN=x", enhancedKeyUsage: ["codeSigning"] }, /ekus/],
  ["an unsupported RSA size", { issuerName: "Self", subject: "CN=x", keyType: "RSA", keySize: 1024 }, /key size 1024/],
] as Array<[string, CertificatePolicy, RegExp]>) {
  test(`create refuses ${label} with 400 BadParameter and makes no key`, async (t) => {
    const name = `refused-${label.replace(/[^a-z]+/gi, "-")}`.replace(/-+$/, "");
    const error = await t.throwsAsync(certificates.beginCreateCertificate(name, policy));
    t.is((error as { statusCode?: number }).statusCode, 400);
    t.is((error as { code?: string }).code, "BadParameter");
    t.regex(error!.message, pattern);
    const missing = await t.throwsAsync(keys.getKey(name));
    t.is((missing as { statusCode?: number }).statusCode, 404);
  });
}

test("--certs name:USAGES sets the start-up certificate's EKUs; a plain name keeps clientAuth+serverAuth+codeSigning", async (t) => {
  t.deepEqual(ekusOf((await certificateAndKey(t, "uefi-start")).raw), [CODE_SIGNING]);
  t.deepEqual(ekusOf((await certificateAndKey(t, "ec-start")).raw), [SERVER_AUTH, "1.3.6.1.5.5.7.3.4"]);
  t.deepEqual(ekusOf((await certificateAndKey(t, "tls-default")).raw), [CLIENT_AUTH, SERVER_AUTH, CODE_SIGNING]);
  t.deepEqual((await certificates.getCertificatePolicy("uefi-start")).enhancedKeyUsage, [CODE_SIGNING]);
  t.deepEqual((await certificates.getCertificatePolicy("tls-default")).enhancedKeyUsage, [CLIENT_AUTH, SERVER_AUTH, CODE_SIGNING]);
});

test("all:codeSigning applies to every RSA/EC key, and a named entry wins over it", async (t) => {
  const local = await startTestEmulator({ keys: "a:RSA:2048,b:EC:P-256,aes:oct:256", certs: ["b:serverAuth", "all:codeSigning"] });
  try {
    const client = new CertificateClient(local.url, local.credential(), local.clientOptions);
    t.deepEqual(ekusOf((await client.getCertificate("a")).cer!), [CODE_SIGNING]);
    t.deepEqual(ekusOf((await client.getCertificate("b")).cer!), [SERVER_AUTH]);
    const names: string[] = [];
    for await (const p of client.listPropertiesOfCertificates()) names.push(p.name!);
    t.deepEqual(names.sort(), ["a", "b"]);
  } finally {
    await local.close();
  }
});

test("addKey with ekus makes a run-time certificate with those usages", async (t) => {
  await emulator.addKey("late-uefi:RSA:2048", { certificate: true, ekus: ["codeSigning"] });
  t.deepEqual(ekusOf((await certificateAndKey(t, "late-uefi")).raw), [CODE_SIGNING]);
});

test("the CLI parses --certs NAME:USAGES and refuses unknown usages", (t) => {
  t.deepEqual(parseEmulatorArgs(["--keys", "k:RSA:2048", "--certs", "k:codeSigning"]), { keys: "k:RSA:2048", certs: ["k:codeSigning"] });
  t.deepEqual(parseEmulatorArgs(["--certs", "all"]), { certs: "all" });
  t.throws(() => parseEmulatorArgs(["--certs", "k:codeSinging"]), { message: /unknown extended key usage 'codeSinging'/ });
  t.throws(() => parseEmulatorArgs(["--certs", "k:"]), { message: /expected NAME or NAME:USAGE/ });
});

test("mixed: a certificate of a key made by --keys without --certs can be created later through the API", async (t) => {
  const before = (await keys.getKey("mixed-b")).properties.version;
  await (await certificates.beginCreateCertificate("mixed-b", { issuerName: "Self", subject: "CN=mixed-b", enhancedKeyUsage: [CODE_SIGNING] }, { intervalInMs: 10 })).pollUntilDone();
  const cert = await certificateAndKey(t, "mixed-b");
  t.not((await keys.getKey("mixed-b")).properties.version, before, "the certificate got a new key version");
  t.deepEqual(ekusOf(cert.raw), [CODE_SIGNING]);
});
