// Self-signed certificates backed by the vault key of the same name, as Key Vault creates them with issuer "Self":
// the certificate, its key and its secret share one version. node:crypto signs the TBSCertificate with the key,
// which covers RSA, P-256/384/521 and P-256K alike (WebCrypto has no secp256k1).
import { createHash, randomBytes, sign as signMessage, type webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { certificateNotFound } from "./errors.ts";
import { byLowerCaseName, type KeyVersion } from "./keystore.ts";

export interface CertificateVersion {
  name: string;
  version: string;
  der: Buffer;
  key: KeyVersion;
  nbf: number;
  exp: number;
  created: number;
}

const SIGNING: Record<string, { hash: string; webcrypto: Record<string, string> }> = {
  RSA: { hash: "sha256", webcrypto: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } },
  "P-256": { hash: "sha256", webcrypto: { name: "ECDSA", hash: "SHA-256", namedCurve: "P-256" } },
  "P-384": { hash: "sha384", webcrypto: { name: "ECDSA", hash: "SHA-384", namedCurve: "P-384" } },
  "P-521": { hash: "sha512", webcrypto: { name: "ECDSA", hash: "SHA-512", namedCurve: "P-521" } },
  "P-256K": { hash: "sha256", webcrypto: { name: "ECDSA", hash: "SHA-256", namedCurve: "K-256" } },
};

export async function createSelfSignedCertificate(key: KeyVersion): Promise<CertificateVersion> {
  const m = key.material;
  if (m.family === "oct") throw new Error(`key '${key.name}' is an AES key and cannot back a certificate`);
  const signing = SIGNING[m.family === "RSA" ? "RSA" : m.curve!]!;
  // @peculiar/x509 builds the TBSCertificate and asks this provider to sign it; the key never leaves the emulator.
  const provider = {
    subtle: {
      sign: async (_algorithm: unknown, _key: unknown, data: ArrayBuffer | ArrayBufferView) => {
        const bytes = ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data);
        // WebCrypto's ECDSA signatures are raw r||s (IEEE P1363), which @peculiar/x509 re-encodes as DER.
        const signature = signMessage(signing.hash, bytes, { key: m.privateKey!, dsaEncoding: "ieee-p1363" });
        return signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength);
      },
    },
  } as unknown as webcrypto.Crypto;
  const now = Date.now();
  const notBefore = new Date(Math.floor(now / 1000) * 1000 - 60_000);
  const notAfter = new Date(notBefore.getTime() + 365 * 86_400_000);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: "01" + randomBytes(15).toString("hex"),
      subject: `CN=${key.name}`,
      issuer: `CN=${key.name}`,
      notBefore,
      notAfter,
      publicKey: m.publicKey!.export({ type: "spki", format: "der" }),
      signingKey: { algorithm: signing.webcrypto } as unknown as webcrypto.CryptoKey,
      signingAlgorithm: signing.webcrypto as unknown as webcrypto.Algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, false),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.codeSigning]),
      ],
    },
    provider,
  );
  return {
    name: key.name,
    version: key.version,
    der: Buffer.from(cert.rawData),
    key,
    nbf: Math.floor(notBefore.getTime() / 1000),
    exp: Math.floor(notAfter.getTime() / 1000),
    created: Math.floor(now / 1000),
  };
}

export class CertificateStore {
  private readonly certificates = new Map<string, CertificateVersion[]>();

  add(cert: CertificateVersion): void {
    const versions = this.certificates.get(cert.name) ?? [];
    versions.push(cert);
    this.certificates.set(cert.name, versions);
  }

  get(name: string, version?: string): CertificateVersion {
    const versions = this.certificates.get(name);
    if (!versions) throw certificateNotFound(name, version || undefined);
    if (!version) return versions[versions.length - 1]!;
    const found = versions.find((v) => v.version === version);
    if (!found) throw certificateNotFound(name, version);
    return found;
  }

  versions(name: string): CertificateVersion[] {
    const versions = this.certificates.get(name);
    if (!versions) throw certificateNotFound(name);
    return versions;
  }

  names(): string[] {
    return [...this.certificates.keys()].sort(byLowerCaseName);
  }
}

// ---- REST shapes (certificates.json: CertificateBundle, CertificateItem) ----

const x5t = (c: CertificateVersion): string => createHash("sha1").update(c.der).digest("base64url");

function certificateAttributes(c: CertificateVersion): Record<string, unknown> {
  return {
    enabled: true,
    nbf: c.nbf,
    exp: c.exp,
    created: c.created,
    updated: c.created,
    recoveryLevel: "Recoverable+Purgeable",
    recoverableDays: 90,
  };
}

function certificatePolicy(base: string, c: CertificateVersion): Record<string, unknown> {
  const m = c.key.material;
  const keyProps: Record<string, unknown> = { exportable: false, kty: m.family === "RSA" ? "RSA" : "EC", reuse_key: false };
  if (m.family === "RSA") keyProps.key_size = m.modulusBits;
  else keyProps.crv = m.curve;
  return {
    id: `${base}/certificates/${c.name}/policy`,
    key_props: keyProps,
    secret_props: { contentType: "application/x-pkcs12" },
    x509_props: {
      subject: `CN=${c.name}`,
      ekus: ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.3"],
      key_usage: ["digitalSignature", "keyEncipherment"],
      validity_months: 12,
      basic_constraints: { ca: false },
    },
    lifetime_actions: [],
    issuer: { name: "Self" },
    attributes: { enabled: true, created: c.created, updated: c.created },
  };
}

export function certificateBundle(base: string, c: CertificateVersion, withPolicy: boolean): Record<string, unknown> {
  const bundle: Record<string, unknown> = {
    id: `${base}/certificates/${c.name}/${c.version}`,
    kid: `${base}/keys/${c.name}/${c.version}`,
    sid: `${base}/secrets/${c.name}/${c.version}`,
    x5t: x5t(c),
    cer: c.der.toString("base64"),
    contentType: "application/x-pkcs12",
    attributes: certificateAttributes(c),
  };
  if (withPolicy) bundle.policy = certificatePolicy(base, c);
  return bundle;
}

export function certificateItem(base: string, c: CertificateVersion, withVersion: boolean): Record<string, unknown> {
  return {
    id: withVersion ? `${base}/certificates/${c.name}/${c.version}` : `${base}/certificates/${c.name}`,
    x5t: x5t(c),
    attributes: certificateAttributes(c),
    subject: `CN=${c.name}`,
  };
}
