// Self-signed certificates backed by the vault key of the same name, as Key Vault creates them with issuer "Self":
// the certificate, its key and its secret share one version. node:crypto signs the TBSCertificate with the key,
// which covers RSA, P-256/384/521 and P-256K alike (WebCrypto has no secp256k1).
import { createHash, randomBytes, sign as signMessage, type webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { KeyVaultError, badParameter, certificateNotFound } from "./errors.ts";
import { NameMap, type CreateKeyRequest, type KeyVersion } from "./keystore.ts";

export interface CertificateVersion {
  name: string;
  version: string;
  der: Buffer;
  key: KeyVersion;
  policy: CertificatePolicy;
  nbf: number;
  exp: number;
  created: number;
}

/** The parts of a certificate policy (certificates.json: CertificatePolicy) that shape the certificate. */
export interface CertificatePolicy {
  subject: string;
  /** Extended key usages as dotted OIDs; empty = no extension. */
  ekus: string[];
  /** KeyUsageType names (digitalSignature, keyEncipherment, ...); empty = no extension. */
  keyUsage: string[];
  validityMonths: number;
  sans: { dns_names?: string[]; emails?: string[]; upns?: string[] };
  reuseKey: boolean;
}

/** The CLI's names for the usual extended key usages; dotted OIDs are accepted as well. */
export const EKU_OIDS: Record<string, string> = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  codeSigning: "1.3.6.1.5.5.7.3.3",
  emailProtection: "1.3.6.1.5.5.7.3.4",
  timeStamping: "1.3.6.1.5.5.7.3.8",
  OCSPSigning: "1.3.6.1.5.5.7.3.9",
};

/** What --certs gives a certificate when no usages are named: fit for TLS on either side and for code signing. */
export const START_UP_EKUS = [EKU_OIDS.clientAuth!, EKU_OIDS.serverAuth!, EKU_OIDS.codeSigning!];
/** The service's x509_props for a "Self" policy that names no ekus or key_usage (azure-sdk-for-js recordings). */
const SERVICE_DEFAULT_EKUS = [EKU_OIDS.serverAuth!, EKU_OIDS.clientAuth!];
const SERVICE_DEFAULT_KEY_USAGE = ["digitalSignature", "keyEncipherment"];

const OID = /^[0-2](\.(0|[1-9]\d*))+$/;

/** `codeSigning+serverAuth` or dotted OIDs joined by "+" → OIDs. */
export function parseEkuList(spec: string): string[] {
  const ekus = spec.split("+").map((item) => {
    const oid = EKU_OIDS[item] ?? (OID.test(item) ? item : undefined);
    if (!oid) throw new Error(`unknown extended key usage '${item}' (use ${Object.keys(EKU_OIDS).join(", ")} or a dotted OID)`);
    return oid;
  });
  return [...new Set(ekus)];
}

/**
 * One --certs entry: `name` or `name:codeSigning+serverAuth` (the usages replace the start-up default). The name
 * `all` stands for every RSA and EC key.
 */
export function parseCertificateSpec(entry: string): { name: string; ekus?: string[] } {
  const [name, usages, ...rest] = entry.trim().split(":");
  if (!name || rest.length > 0 || usages === "") throw new Error(`certificate spec '${entry}': expected NAME or NAME:USAGE[+USAGE...], e.g. signer:codeSigning`);
  if (usages === undefined) return { name };
  try {
    return { name, ekus: parseEkuList(usages) };
  } catch (error) {
    throw new Error(`certificate spec '${entry}': ${(error as Error).message}`);
  }
}

export function startUpPolicy(name: string, ekus: string[] = START_UP_EKUS): CertificatePolicy {
  return { subject: `CN=${name}`, ekus, keyUsage: ["digitalSignature", "keyEncipherment"], validityMonths: 12, sans: {}, reuseKey: false };
}

const KEY_USAGE_FLAGS: Record<string, x509.KeyUsageFlags> = {
  digitalSignature: x509.KeyUsageFlags.digitalSignature,
  nonRepudiation: x509.KeyUsageFlags.nonRepudiation,
  keyEncipherment: x509.KeyUsageFlags.keyEncipherment,
  dataEncipherment: x509.KeyUsageFlags.dataEncipherment,
  keyAgreement: x509.KeyUsageFlags.keyAgreement,
  keyCertSign: x509.KeyUsageFlags.keyCertSign,
  cRLSign: x509.KeyUsageFlags.cRLSign,
  encipherOnly: x509.KeyUsageFlags.encipherOnly,
  decipherOnly: x509.KeyUsageFlags.decipherOnly,
};

const SIGNING: Record<string, { hash: string; webcrypto: Record<string, string> }> = {
  RSA: { hash: "sha256", webcrypto: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } },
  "P-256": { hash: "sha256", webcrypto: { name: "ECDSA", hash: "SHA-256", namedCurve: "P-256" } },
  "P-384": { hash: "sha384", webcrypto: { name: "ECDSA", hash: "SHA-384", namedCurve: "P-384" } },
  "P-521": { hash: "sha512", webcrypto: { name: "ECDSA", hash: "SHA-512", namedCurve: "P-521" } },
  "P-256K": { hash: "sha256", webcrypto: { name: "ECDSA", hash: "SHA-256", namedCurve: "K-256" } },
};

/**
 * A WebCrypto stand-in through which @peculiar/x509 signs a TBSCertificate or CertificationRequestInfo with the
 * vault key; the key never leaves the emulator.
 */
function vaultKeySigner(key: KeyVersion): { signing: (typeof SIGNING)[string]; provider: webcrypto.Crypto } {
  const m = key.material;
  if (m.family === "oct") throw new Error(`key '${key.name}' is an AES key and cannot back a certificate`);
  const signing = SIGNING[m.family === "RSA" ? "RSA" : m.curve!]!;
  const spki = m.publicKey!.export({ type: "spki", format: "der" });
  const provider = {
    subtle: {
      sign: async (_algorithm: unknown, _key: unknown, data: ArrayBuffer | ArrayBufferView) => {
        const bytes = ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data);
        // WebCrypto's ECDSA signatures are raw r||s (IEEE P1363), which @peculiar/x509 re-encodes as DER.
        const signature = signMessage(signing.hash, bytes, { key: m.privateKey!, dsaEncoding: "ieee-p1363" });
        return signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength);
      },
      exportKey: async () => spki.buffer.slice(spki.byteOffset, spki.byteOffset + spki.byteLength),
    },
  } as unknown as webcrypto.Crypto;
  return { signing, provider };
}

function policyExtensions(policy: CertificatePolicy): x509.Extension[] {
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(false, undefined, false)];
  if (policy.keyUsage.length > 0) {
    const flags = policy.keyUsage.reduce((all, usage) => all | KEY_USAGE_FLAGS[usage]!, 0);
    extensions.push(new x509.KeyUsagesExtension(flags, true));
  }
  if (policy.ekus.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension(policy.ekus));
  const names = [
    ...(policy.sans.dns_names ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(policy.sans.emails ?? []).map((value) => ({ type: "email" as const, value })),
    ...(policy.sans.upns ?? []).map((value) => ({ type: "upn" as const, value })),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  return extensions;
}

export async function createSelfSignedCertificate(key: KeyVersion, policy: CertificatePolicy = startUpPolicy(key.name)): Promise<CertificateVersion> {
  const { signing, provider } = vaultKeySigner(key);
  const now = Date.now();
  const notBefore = new Date(Math.floor(now / 1000) * 1000 - 60_000);
  const notAfter = new Date(notBefore);
  notAfter.setUTCMonth(notAfter.getUTCMonth() + policy.validityMonths);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: "01" + randomBytes(15).toString("hex"),
      subject: policy.subject,
      issuer: policy.subject,
      notBefore,
      notAfter,
      publicKey: key.material.publicKey!.export({ type: "spki", format: "der" }),
      signingKey: { algorithm: signing.webcrypto } as unknown as webcrypto.CryptoKey,
      signingAlgorithm: signing.webcrypto as unknown as webcrypto.Algorithm,
      extensions: policyExtensions(policy),
    },
    provider,
  );
  return {
    name: key.name,
    version: key.version,
    der: Buffer.from(cert.rawData),
    key,
    policy,
    nbf: Math.floor(notBefore.getTime() / 1000),
    exp: Math.floor(notAfter.getTime() / 1000),
    created: Math.floor(now / 1000),
  };
}

/** The PKCS#10 request the service shows in a pending operation's `csr`: subject, key and the policy's extensions. */
export async function createCertificateRequest(key: KeyVersion, policy: CertificatePolicy): Promise<Buffer> {
  const { signing, provider } = vaultKeySigner(key);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: policy.subject,
      keys: {
        privateKey: { algorithm: signing.webcrypto } as unknown as webcrypto.CryptoKey,
        publicKey: { algorithm: signing.webcrypto } as unknown as webcrypto.CryptoKey,
      },
      signingAlgorithm: signing.webcrypto as unknown as webcrypto.Algorithm,
      extensions: policyExtensions(policy),
    },
    provider,
  );
  return Buffer.from(csr.rawData);
}

// ---- POST /certificates/{name}/create: the request body (certificates.json: CertificateCreateParameters) ----

const CERTIFICATE_KEY_TYPES = ["RSA", "RSA-HSM", "EC", "EC-HSM"];

function optionalObject(value: unknown, field: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw badParameter(`Property '${field}' must be an object.`);
  return value as Record<string, unknown>;
}

function optionalStrings(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) throw badParameter(`Property '${field}' must be a list of strings.`);
  return value as string[];
}

/** Attribute types upper-cased, as @peculiar/x509 knows them ("cn=MyCert", the SDK's default, → "CN=MyCert"). */
function normalizeSubject(subject: string): string {
  const normalized = subject.trim().replace(/(^|[,+]\s*)([A-Za-z]+)\s*=/g, (_match, separator: string, type: string) => `${separator}${type.toUpperCase()}=`);
  let name: x509.Name;
  try {
    name = new x509.Name(normalized);
  } catch {
    throw badParameter(`Property 'policy.x509_props.subject' is not a valid X.500 distinguished name: ${subject}`);
  }
  if (name.toJSON().length === 0) throw badParameter(`Property 'policy.x509_props.subject' is not a valid X.500 distinguished name: ${subject}`);
  return normalized;
}

/**
 * Reads a create request's policy into the key to make and the certificate policy. Only issuer "Self" is served;
 * `previous` is the certificate's current policy, which the service reuses when a request names none.
 */
export function parseCreateCertificateRequest(
  body: Record<string, unknown>,
  previous?: { key: CreateKeyRequest; policy: CertificatePolicy },
): { key: CreateKeyRequest; policy: CertificatePolicy } {
  if (body.policy === undefined || body.policy === null) {
    if (previous) return previous;
    throw badParameter("Property 'policy' is required to create the first version of a certificate.");
  }
  const policy = optionalObject(body.policy, "policy");
  const issuer = optionalObject(policy.issuer, "policy.issuer");
  const issuerName = issuer.name ?? "Self";
  if (typeof issuerName !== "string" || issuerName.toLowerCase() !== "self") {
    throw badParameter(`Issuer '${String(issuerName)}' is not supported: the emulator issues self-signed certificates only (issuer name 'Self').`);
  }

  const keyProps = optionalObject(policy.key_props, "policy.key_props");
  if (keyProps.exportable === true) throw badParameter("Property 'policy.key_props.exportable' must be false: the emulator keeps keys only, no secrets to export them in.");
  if (keyProps.exportable !== undefined && keyProps.exportable !== null && typeof keyProps.exportable !== "boolean") throw badParameter("Property 'policy.key_props.exportable' must be a boolean.");
  const kty = keyProps.kty ?? (keyProps.crv !== undefined && keyProps.crv !== null ? "EC" : "RSA");
  if (typeof kty !== "string" || !CERTIFICATE_KEY_TYPES.includes(kty)) throw badParameter(`Property 'policy.key_props.kty' must be one of: ${CERTIFICATE_KEY_TYPES.join(", ")}.`);
  const key: CreateKeyRequest = { kty };
  if (kty.startsWith("RSA")) {
    const size = keyProps.key_size ?? 2048;
    if (typeof size !== "number") throw badParameter("Property 'policy.key_props.key_size' must be a number.");
    key.keySize = size;
  } else {
    const curve = keyProps.crv ?? "P-256";
    if (typeof curve !== "string") throw badParameter("Property 'policy.key_props.crv' must be a string.");
    key.curve = curve;
  }
  if (keyProps.reuse_key !== undefined && keyProps.reuse_key !== null && typeof keyProps.reuse_key !== "boolean") throw badParameter("Property 'policy.key_props.reuse_key' must be a boolean.");

  const x509Props = optionalObject(policy.x509_props, "policy.x509_props");
  const sansObject = optionalObject(x509Props.sans, "policy.x509_props.sans");
  const sans: CertificatePolicy["sans"] = {};
  for (const field of ["dns_names", "emails", "upns"] as const) {
    const values = optionalStrings(sansObject[field], `policy.x509_props.sans.${field}`);
    if (values && values.length > 0) sans[field] = values;
  }
  const subject = x509Props.subject;
  if (subject !== undefined && subject !== null && typeof subject !== "string") throw badParameter("Property 'policy.x509_props.subject' must be a string.");
  if (!subject && Object.keys(sans).length === 0) throw badParameter("Property 'policy.x509_props' needs a subject or subject alternative names.");
  const ekus = optionalStrings(x509Props.ekus, "policy.x509_props.ekus") ?? SERVICE_DEFAULT_EKUS;
  for (const eku of ekus) if (!OID.test(eku)) throw badParameter(`Property 'policy.x509_props.ekus' holds '${eku}', which is not a dotted OID.`);
  const keyUsage = optionalStrings(x509Props.key_usage, "policy.x509_props.key_usage") ?? SERVICE_DEFAULT_KEY_USAGE;
  for (const usage of keyUsage) {
    if (KEY_USAGE_FLAGS[usage] === undefined) throw badParameter(`Property 'policy.x509_props.key_usage' holds '${usage}'; use ${Object.keys(KEY_USAGE_FLAGS).join(", ")}.`);
  }
  const validityMonths = x509Props.validity_months ?? 12;
  if (typeof validityMonths !== "number" || !Number.isInteger(validityMonths) || validityMonths < 1 || validityMonths > 1200) {
    throw badParameter("Property 'policy.x509_props.validity_months' must be a whole number of months from 1 to 1200.");
  }
  return {
    key,
    policy: {
      subject: subject ? normalizeSubject(subject) : "",
      ekus: [...new Set(ekus)],
      keyUsage: [...new Set(keyUsage)],
      validityMonths,
      sans,
      reuseKey: keyProps.reuse_key === true,
    },
  };
}

/** The create request that made a key version again: what a create without a policy repeats. */
export function keyRequestOf(key: KeyVersion): CreateKeyRequest {
  const m = key.material;
  return m.family === "RSA" ? { kty: key.kty, keySize: m.modulusBits! } : { kty: key.kty, curve: m.curve! };
}

/** A certificate operation (`/certificates/{name}/pending`); self-signed ones complete with the create request. */
export interface CertificateOperation {
  name: string;
  requestId: string;
  csr: Buffer;
}

export class CertificateStore {
  private readonly certificates = new NameMap<CertificateVersion[]>();
  private readonly operations = new NameMap<CertificateOperation>();

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

  /** The latest version, or undefined when there is no certificate of that name. */
  find(name: string): CertificateVersion | undefined {
    return this.certificates.get(name)?.at(-1);
  }

  versions(name: string): CertificateVersion[] {
    const versions = this.certificates.get(name);
    if (!versions) throw certificateNotFound(name);
    return versions;
  }

  names(): string[] {
    return this.certificates.names();
  }

  setOperation(operation: CertificateOperation): void {
    this.operations.set(operation.name, operation);
  }

  /** Certificates made at start-up had no create request, so they have no operation, as imported ones have none. */
  operation(name: string): CertificateOperation {
    const operation = this.operations.get(name);
    if (!operation) throw new KeyVaultError(404, "PendingCertificateNotFound", `Pending certificate not found: ${name}`);
    return operation;
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

export function certificatePolicy(base: string, c: CertificateVersion): Record<string, unknown> {
  const m = c.key.material;
  const keyProps: Record<string, unknown> = { exportable: false, kty: c.key.kty, reuse_key: c.policy.reuseKey };
  if (m.family === "RSA") keyProps.key_size = m.modulusBits;
  else keyProps.crv = m.curve;
  return {
    id: `${base}/certificates/${c.name}/policy`,
    key_props: keyProps,
    secret_props: { contentType: "application/x-pkcs12" },
    x509_props: {
      subject: c.policy.subject,
      sans: c.policy.sans,
      ekus: c.policy.ekus,
      key_usage: c.policy.keyUsage,
      validity_months: c.policy.validityMonths,
      basic_constraints: { ca: false },
    },
    lifetime_actions: [],
    issuer: { name: "Self" },
    attributes: { enabled: true, created: c.created, updated: c.created },
  };
}

/**
 * certificates.json: CertificateOperation. The create request answers `inProgress` as the service does; the
 * certificate exists by then, so every later read of the operation says `completed` and names it in `target`.
 */
export function certificateOperation(base: string, operation: CertificateOperation, completed: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: `${base}/certificates/${operation.name}/pending`,
    issuer: { name: "Self" },
    csr: operation.csr.toString("base64"),
    cancellation_requested: false,
    status: completed ? "completed" : "inProgress",
  };
  if (completed) body.target = `${base}/certificates/${operation.name}`;
  else body.status_details = "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later.";
  body.request_id = operation.requestId;
  return body;
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
    subject: c.policy.subject,
  };
}
