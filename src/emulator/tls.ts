// The emulator's own PKI: a CA (reused from --ca-dir when present) and a server certificate for localhost,
// 127.0.0.1 and ::1. EC P-256 through WebCrypto and @peculiar/x509 keeps start-up in the tens of milliseconds.
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

type CryptoKeyPair = webcrypto.CryptoKeyPair;
const subtle = webcrypto.subtle;
const EC_P256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const DAY_MS = 86_400_000;

x509.cryptoProvider.set(webcrypto);

export interface EmulatorPki {
  caPem: string;
  serverCertPem: string;
  serverKeyPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

function pemToDer(text: string): Buffer {
  return Buffer.from(text.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
}

const randomSerial = (): string => "01" + Buffer.from(webcrypto.getRandomValues(new Uint8Array(15))).toString("hex");

async function createCa(): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const keys = (await subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: "CN=azure-keyvault-pkcs11 emulator CA, O=azure-keyvault-pkcs11",
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 3650 * DAY_MS),
    keys,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

async function loadCa(dir: string): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair } | undefined> {
  const certFile = join(dir, "ca.pem");
  const keyFile = join(dir, "ca-key.pem");
  if (!existsSync(certFile) || !existsSync(keyFile)) return undefined;
  const cert = new x509.X509Certificate(await readFile(certFile, "utf8"));
  const privateKey = await subtle.importKey("pkcs8", pemToDer(await readFile(keyFile, "utf8")), EC_P256, true, ["sign"]);
  const publicKey = await cert.publicKey.export(EC_P256, ["verify"], webcrypto);
  return { cert, keys: { privateKey, publicKey } };
}

/** Creates (or, with caDir holding ca.pem and ca-key.pem, reuses) the CA and issues a fresh server certificate. */
export async function createPki(caDir?: string): Promise<EmulatorPki> {
  let ca = caDir ? await loadCa(caDir) : undefined;
  if (!ca) {
    ca = await createCa();
    if (caDir) {
      await mkdir(caDir, { recursive: true });
      await writeFile(join(caDir, "ca.pem"), ca.cert.toString("pem") + "\n");
      await writeFile(join(caDir, "ca-key.pem"), pem("PRIVATE KEY", await subtle.exportKey("pkcs8", ca.keys.privateKey)), { mode: 0o600 });
    }
  }
  const serverKeys = (await subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: "CN=localhost",
    issuer: ca.cert.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 365 * DAY_MS),
    publicKey: serverKeys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: "dns", value: "localhost" },
        { type: "ip", value: "127.0.0.1" },
        { type: "ip", value: "::1" },
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  });
  return {
    caPem: ca.cert.toString("pem") + "\n",
    serverCertPem: server.toString("pem") + "\n",
    serverKeyPem: pem("PRIVATE KEY", await subtle.exportKey("pkcs8", serverKeys.privateKey)),
  };
}
