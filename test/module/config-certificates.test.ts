// Certificates from config.json: a slot's `certificate` (base64 DER) or `certificate_path` (PEM or DER, relative to
// the config file's folder or absolute) becomes the token's CKO_CERTIFICATE object, and the vault's certificate is
// then never requested (proved with the emulator's request counts). The certificates are issued here by a local
// CA for the vault keys' public keys, whose vault has no certificate of their own, so the config is the only source;
// the fields are checked with @peculiar/x509 and node:crypto, not with the module.
import test from "ava";
import { createHash, webcrypto, X509Certificate as NodeCertificate, verify } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import * as x509 from "@peculiar/x509";
import pkcs11js from "pkcs11js";
import { API, attribute, findObjects, publicKeyFromJwk, requestsSince, rvOf, startModuleFixture, type Handle, type ModuleFixture, type VaultJwk } from "./harness.ts";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const CA_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };

/** A certificate for `jwk`'s public key, issued by `ca` (so that issuer and subject differ). */
async function issueFor(name: string, jwk: VaultJwk, ca: webcrypto.CryptoKeyPair, serialNumber: string): Promise<Buffer> {
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: `CN=${name}, O=config certificate test`,
    issuer: "CN=config test CA",
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: publicKeyFromJwk(jwk).export({ type: "spki", format: "der" }),
    signingKey: ca.privateKey,
    signingAlgorithm: CA_ALGORITHM,
  });
  return Buffer.from(certificate.rawData);
}

const pem = (der: Buffer): string => new x509.X509Certificate(der).toString("pem") + "\n";

/** CKA_ID as the module defines it: SHA-1 of the public key's subjectPublicKey bits, computed from the JWK. */
function idOf(jwk: VaultJwk): Buffer {
  if (jwk.kty.startsWith("RSA")) return createHash("sha1").update(publicKeyFromJwk(jwk).export({ type: "pkcs1", format: "der" })).digest();
  return createHash("sha1").update(Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")])).digest();
}

// Keys whose vault has no certificate, each configured with one certificate source.
const CONFIGURED = ["b64", "pem", "der", "chain"] as const;
let fixture: ModuleFixture;
/** The certificate DER each slot was configured with. */
const configured = new Map<string, Buffer>();
/** Requests the module made per key name from C_Initialize until every token was loaded. */
const moduleRequests = new Map<string, Record<string, number>>();
const slotOf = new Map<string, Handle>();
/** The CA certificate that follows the key's in chain.pem. */
let caCertificate: Buffer;

test.before(async () => {
  fixture = await startModuleFixture({
    keys: "b64:RSA:2048,pem:EC:P-256,der:RSA:3072,chain:EC:P-384,vaultcert:RSA:2048,wrong:EC:P-256,plain:EC:P-256",
    certs: ["vaultcert"],
    skipInitialize: true,
    async slotFields(_emulator, { vaultGet, dir }) {
      const jwkOf = async (name: string): Promise<VaultJwk> => {
        const response = await vaultGet(`/keys/${name}?${API}`);
        if (response.status !== 200) throw new Error(`GET key ${name}: ${response.status}`);
        return (response.body as { key: VaultJwk }).key;
      };
      const ca = (await webcrypto.subtle.generateKey(CA_ALGORITHM, false, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
      const caDer = Buffer.from((await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: "0a", name: "CN=config test CA", keys: ca, signingAlgorithm: CA_ALGORITHM })).rawData);
      caCertificate = caDer;
      for (const [index, name] of [...CONFIGURED, "vaultcert"].entries()) configured.set(name, await issueFor(name, await jwkOf(name), ca, `7f${index}1`));
      const vaultCertificate = await vaultGet(`/certificates/vaultcert?${API}`);
      if (vaultCertificate.status !== 200) throw new Error(`GET certificate vaultcert: ${vaultCertificate.status}`);
      // "wrong" is configured with another key's certificate: the vault's own certificate of "vaultcert".
      configured.set("wrong", Buffer.from((vaultCertificate.body as { cer: string }).cer, "base64"));

      await mkdir(path.join(dir, "certs"));
      await writeFile(path.join(dir, "certs", "pem.pem"), pem(configured.get("pem")!));
      await writeFile(path.join(dir, "certs", "der.cer"), configured.get("der")!);
      await writeFile(path.join(dir, "chain.pem"), pem(configured.get("chain")!) + pem(caDer));
      await writeFile(path.join(dir, "wrong.pem"), pem(configured.get("wrong")!));
      return {
        b64: { certificate: configured.get("b64")!.toString("base64") },
        // Relative to the config file's folder.
        pem: { certificate_path: "certs/pem.pem" },
        der: { certificate_path: path.join(dir, "certs", "der.cer") },
        chain: { certificate_path: "chain.pem" },
        vaultcert: { certificate: configured.get("vaultcert")!.toString("base64") },
        wrong: { certificate_path: "wrong.pem" },
      };
    },
  });
  const names = [...fixture.keys.keys()];
  const before = new Map<string, Record<string, number>>();
  for (const name of names) before.set(name, await fixture.emulator.requestCounts(name));
  const { pkcs11 } = fixture;
  pkcs11.C_Initialize();
  for (const slot of pkcs11.C_GetSlotList(true)) slotOf.set(pkcs11.C_GetTokenInfo(slot).label.trim(), slot);
  // Load every token (C_FindObjects waits for the key).
  for (const name of names) {
    const session = pkcs11.C_OpenSession(slotOf.get(name)!, pkcs11js.CKF_SERIAL_SESSION);
    findObjects(pkcs11, session, []);
    pkcs11.C_CloseSession(session);
  }
  for (const name of names) moduleRequests.set(name, requestsSince(before.get(name)!, await fixture.emulator.requestCounts(name)));
});
test.after.always(() => fixture?.close());

function objectsOf(name: string): { session: Handle; privateKey: Handle; publicKey: Handle; certificates: Handle[] } {
  const { pkcs11 } = fixture;
  const session = pkcs11.C_OpenSession(slotOf.get(name)!, pkcs11js.CKF_SERIAL_SESSION);
  const one = (objectClass: number): Handle => {
    const found = findObjects(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: objectClass }]);
    if (found.length !== 1) throw new Error(`${name}: ${found.length} objects of class ${objectClass}`);
    return found[0]!;
  };
  return {
    session,
    privateKey: one(pkcs11js.CKO_PRIVATE_KEY),
    publicKey: one(pkcs11js.CKO_PUBLIC_KEY),
    // The key's own certificate; CA certificates from a chain file are category 2 (authority).
    certificates: findObjects(pkcs11, session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
      { type: pkcs11js.CKA_CERTIFICATE_CATEGORY, value: CATEGORY_TOKEN_USER },
    ]),
  };
}

const CATEGORY_TOKEN_USER = ulong(1);
const CATEGORY_AUTHORITY = ulong(2);
function ulong(value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
}

/** The DER INTEGER encoding of a certificate's serial number, as CKA_SERIAL_NUMBER holds it. */
function serialNumberDer(der: Buffer): Buffer {
  let hex = new NodeCertificate(der).serialNumber.toLowerCase();
  if (hex.length % 2) hex = `0${hex}`;
  let value = Buffer.from(hex, "hex");
  while (value.length > 1 && value[0] === 0 && value[1]! < 0x80) value = value.subarray(1);
  if (value[0]! >= 0x80) value = Buffer.concat([Buffer.from([0]), value]);
  return Buffer.concat([Buffer.from([0x02, value.length]), value]);
}

for (const [name, source] of [
  ["b64", "certificate (base64 DER)"],
  ["pem", "certificate_path to a PEM file, relative to the config"],
  ["der", "certificate_path to a DER file, absolute"],
  ["chain", "certificate_path to a PEM chain (the first certificate)"],
  ["vaultcert", "certificate, although the vault has one of its own"],
] as const) {
  test(`${name} (${source}): the token's certificate object, and no certificate request to the vault`, (t) => {
    const der = configured.get(name)!;
    const parsed = new x509.X509Certificate(der);
    const jwk = fixture.key(name).jwk;
    // The configured certificate really is for the vault key (checked here, independently of the module).
    t.true(new NodeCertificate(der).publicKey.equals(publicKeyFromJwk(jwk)));
    const { pkcs11 } = fixture;
    const { session, privateKey, publicKey, certificates } = objectsOf(name);
    t.is(certificates.length, 1);
    const certificate = certificates[0]!;
    t.deepEqual(attribute(pkcs11, session, certificate, pkcs11js.CKA_VALUE), der);
    t.deepEqual(attribute(pkcs11, session, certificate, pkcs11js.CKA_SUBJECT), Buffer.from(parsed.subjectName.toArrayBuffer()));
    t.deepEqual(attribute(pkcs11, session, certificate, pkcs11js.CKA_ISSUER), Buffer.from(parsed.issuerName.toArrayBuffer()));
    t.notDeepEqual(Buffer.from(parsed.subjectName.toArrayBuffer()), Buffer.from(parsed.issuerName.toArrayBuffer()));
    t.deepEqual(attribute(pkcs11, session, certificate, pkcs11js.CKA_SERIAL_NUMBER), serialNumberDer(der));
    t.deepEqual(attribute(pkcs11, session, certificate, pkcs11js.CKA_CHECK_VALUE), createHash("sha1").update(der).digest().subarray(0, 3));
    for (const object of [privateKey, publicKey, certificate]) {
      t.deepEqual(attribute(pkcs11, session, object, pkcs11js.CKA_ID), idOf(jwk));
      t.is(attribute(pkcs11, session, object, pkcs11js.CKA_LABEL).toString(), name);
    }
    t.deepEqual(attribute(pkcs11, session, privateKey, pkcs11js.CKA_SUBJECT), Buffer.from(parsed.subjectName.toArrayBuffer()));
    pkcs11.C_CloseSession(session);
    const requests = moduleRequests.get(name)!;
    t.false("get-certificate" in requests);
    t.true((requests["get-key"] ?? 0) >= 1);
  });
}

test("chain: the CA certificate after the key's in the PEM file is an authority certificate with its own id and label", (t) => {
  const { pkcs11 } = fixture;
  const { session, privateKey } = objectsOf("chain");
  const authorities = findObjects(pkcs11, session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
    { type: pkcs11js.CKA_CERTIFICATE_CATEGORY, value: CATEGORY_AUTHORITY },
  ]);
  t.is(authorities.length, 1);
  const ca = authorities[0]!;
  const parsed = new x509.X509Certificate(caCertificate);
  t.deepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_VALUE), caCertificate);
  t.deepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_SUBJECT), Buffer.from(parsed.subjectName.toArrayBuffer()));
  t.deepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_ISSUER), Buffer.from(parsed.issuerName.toArrayBuffer()));
  t.deepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_SERIAL_NUMBER), serialNumberDer(caCertificate));
  t.is(attribute(pkcs11, session, ca, pkcs11js.CKA_LABEL).toString(), "config test CA");
  t.deepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_TRUSTED), Buffer.from([0]));
  // Its CKA_ID is its own public key's (RFC 5280 method 1), so no host pairs it with the vault key.
  const caJwk = new NodeCertificate(caCertificate).publicKey.export({ format: "jwk" });
  t.deepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_ID), idOf(caJwk as unknown as VaultJwk));
  const keyId = idOf(fixture.key("chain").jwk);
  t.notDeepEqual(attribute(pkcs11, session, ca, pkcs11js.CKA_ID), keyId);
  t.is(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_ID, value: keyId }]).length, 3, "the key's id finds its private key, public key and certificate only");
  // A certificate is not a key.
  t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, ca)), pkcs11js.CKR_KEY_HANDLE_INVALID);
  t.not(attribute(pkcs11, session, privateKey, pkcs11js.CKA_CLASS).readUInt32LE(0), pkcs11js.CKO_CERTIFICATE);
  pkcs11.C_CloseSession(session);
});

test("vaultcert: the configured certificate wins over the vault's own", (t) => {
  const vaultDer = fixture.key("vaultcert").certificateDer;
  t.truthy(vaultDer);
  t.notDeepEqual(configured.get("vaultcert"), vaultDer);
  const { session, certificates } = objectsOf("vaultcert");
  t.deepEqual(attribute(fixture.pkcs11, session, certificates[0]!, pkcs11js.CKA_VALUE), configured.get("vaultcert"));
  fixture.pkcs11.C_CloseSession(session);
});

test("plain: without a configured certificate the module asks the vault, which has none: no certificate object", (t) => {
  t.is(fixture.key("plain").certificateDer, undefined);
  const { session, certificates } = objectsOf("plain");
  t.is(certificates.length, 0);
  fixture.pkcs11.C_CloseSession(session);
  t.true((moduleRequests.get("plain")!["get-certificate"] ?? 0) >= 1);
});

test("wrong: another key's certificate is left out, and the key still signs", (t) => {
  const der = configured.get("wrong")!;
  const jwk = fixture.key("wrong").jwk;
  const certificateKey = new NodeCertificate(der).publicKey;
  t.false(certificateKey.equals(publicKeyFromJwk(jwk)));
  t.true(certificateKey.equals(publicKeyFromJwk(fixture.key("vaultcert").jwk)));
  const { pkcs11 } = fixture;
  const { session, privateKey, certificates } = objectsOf("wrong");
  // A client pairing by CKA_ID would present this certificate with signatures that cannot verify against it.
  t.is(certificates.length, 0);
  t.deepEqual(attribute(pkcs11, session, privateKey, pkcs11js.CKA_ID), idOf(jwk));
  t.not(
    attribute(pkcs11, session, privateKey, pkcs11js.CKA_SUBJECT).toString("hex"),
    Buffer.from(new x509.X509Certificate(der).subjectName.toArrayBuffer()).toString("hex"),
  );
  // The configured certificate was taken as the slot's certificate: the vault was not asked for another.
  t.false("get-certificate" in moduleRequests.get("wrong")!);

  const message = Buffer.from("signed by the key, not by the certificate");
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, privateKey);
  const signature = pkcs11.C_Sign(session, message, Buffer.alloc(64));
  t.true(verify("sha256", message, { key: publicKeyFromJwk(jwk), dsaEncoding: "ieee-p1363" }, signature));
  pkcs11.C_CloseSession(session);
});
