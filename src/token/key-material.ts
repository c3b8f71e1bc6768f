// Everything derived from a vault key and its certificate, computed once when the key is loaded so that no
// signature pays for parsing, DER encoding or KeyObject creation.
import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import type { VaultKey } from "../vault/types.ts";
import { CURVES, type CurveName, type CurveSpec } from "../mechanisms/algorithms.ts";
import { certificateFields, keyIdentifier, octetString, type CertificateFields } from "./der.ts";
import { log } from "../log/log.ts";

export type KeyKind = "RSA" | "EC";

export interface RsaParts {
  modulus: Buffer;
  publicExponent: Buffer;
  bits: number;
}

export interface EcParts {
  curve: CurveSpec;
  /** 0x04 || x || y */
  point: Buffer;
  /** CKA_EC_POINT: the point as a DER OCTET STRING. */
  pointDer: Buffer;
}

export interface CertificateMaterial {
  der: Buffer;
  fields: CertificateFields;
  notBefore?: Date;
  notAfter?: Date;
}

export interface KeyMaterial {
  key: VaultKey;
  kind: KeyKind;
  publicKey: KeyObject;
  spkiDer: Buffer;
  /** CKA_ID: SHA-1 of the subjectPublicKey bits, equal to the usual certificate SubjectKeyIdentifier. */
  id: Buffer;
  /** Size in bits: the modulus for RSA, the order for EC (what C_GetMechanismInfo's key sizes mean). */
  keyBits: number;
  /** Length of a signature in bytes. */
  signatureLength: number;
  rsa?: RsaParts;
  ec?: EcParts;
  certificate?: CertificateMaterial;
  can: { sign: boolean; verify: boolean; encrypt: boolean; decrypt: boolean; wrap: boolean; unwrap: boolean };
}

const base64url = (value: Buffer): string => value.toString("base64url");

function stripLeadingZeros(value: Buffer): Buffer {
  let start = 0;
  while (start < value.length - 1 && value[start] === 0) start++;
  return value.subarray(start);
}

function leftPad(value: Buffer, size: number): Buffer {
  if (value.length >= size) return value;
  return Buffer.concat([Buffer.alloc(size - value.length), value]);
}

/**
 * Material already built from the same key and certificate objects. An agent context hands every application the
 * same cached VaultKey and certificate, so the public key and the certificate are parsed once per context instead
 * of once per process; a private helper builds each once anyway. KeyMaterial is never changed after it is built.
 */
const builtMaterial = new WeakMap<VaultKey, Map<Buffer | undefined, Map<string, KeyMaterial>>>();

export function buildKeyMaterial(key: VaultKey, certificateDer: Buffer | undefined, label: string): KeyMaterial {
  let byCertificate = builtMaterial.get(key);
  if (!byCertificate) builtMaterial.set(key, (byCertificate = new Map()));
  let byLabel = byCertificate.get(certificateDer);
  if (!byLabel) {
    // A certificate read again (the agent's refresh) is a new object: keep only a few per key.
    if (byCertificate.size >= 4) byCertificate.clear();
    byCertificate.set(certificateDer, (byLabel = new Map()));
  }
  let material = byLabel.get(label);
  if (!material) byLabel.set(label, (material = buildKeyMaterialAnew(key, certificateDer, label)));
  return material;
}

function buildKeyMaterialAnew(key: VaultKey, certificateDer: Buffer | undefined, label: string): KeyMaterial {
  const ops = new Set(key.keyOps);
  const can = {
    sign: ops.has("sign"),
    verify: ops.has("verify"),
    encrypt: ops.has("encrypt"),
    decrypt: ops.has("decrypt"),
    wrap: ops.has("wrapKey"),
    unwrap: ops.has("unwrapKey"),
  };
  let material: Omit<KeyMaterial, "spkiDer" | "id" | "certificate">;
  if (key.kty === "RSA" || key.kty === "RSA-HSM") {
    if (!key.n || !key.e) throw new Error(`key ${key.name} is RSA but has no n/e`);
    const modulus = stripLeadingZeros(key.n);
    const publicExponent = stripLeadingZeros(key.e);
    const publicKey = createPublicKey({ key: { kty: "RSA", n: base64url(modulus), e: base64url(publicExponent) }, format: "jwk" });
    const bits = publicKey.asymmetricKeyDetails?.modulusLength ?? modulus.length * 8;
    material = { key, kind: "RSA", publicKey, keyBits: bits, signatureLength: Math.ceil(bits / 8), rsa: { modulus, publicExponent, bits }, can };
  } else if (key.kty === "EC" || key.kty === "EC-HSM") {
    const curve = CURVES[key.crv as CurveName];
    if (!curve) throw new Error(`key ${key.name} uses the unsupported curve ${String(key.crv)}`);
    if (!key.x || !key.y) throw new Error(`key ${key.name} is EC but has no x/y`);
    const x = leftPad(stripLeadingZeros(key.x), curve.fieldBytes);
    const y = leftPad(stripLeadingZeros(key.y), curve.fieldBytes);
    const publicKey = createPublicKey({ key: { kty: "EC", crv: curve.jwkCrv, x: base64url(x), y: base64url(y) }, format: "jwk" });
    const point = Buffer.concat([Buffer.from([0x04]), x, y]);
    material = { key, kind: "EC", publicKey, keyBits: curve.orderBits, signatureLength: 2 * curve.fieldBytes, ec: { curve, point, pointDer: octetString(point) }, can };
  } else {
    throw new Error(`key ${key.name} has key type ${key.kty}, which this module cannot expose (RSA and EC only)`);
  }
  const spkiDer = material.publicKey.export({ type: "spki", format: "der" });
  const id = keyIdentifier(spkiDer);
  return { ...material, spkiDer, id, certificate: certificateDer ? parseCertificate(certificateDer, spkiDer, label) : undefined };
}

function parseCertificate(der: Buffer, keySpki: Buffer, label: string): CertificateMaterial | undefined {
  try {
    const fields = certificateFields(der);
    const parsed = new X509Certificate(der);
    if (!createPublicKey({ key: fields.subjectPublicKeyInfo, format: "der", type: "spki" }).equals(createPublicKey({ key: keySpki, format: "der", type: "spki" }))) {
      // Clients pair a key with the certificate of the same CKA_ID: a certificate for another key would make them
      // present it with signatures that cannot verify, so it is left out.
      log.error(`${label}: the certificate's public key is not the vault key's; the token shows no certificate (check the slot's certificate or certificate_path, or the vault certificate named like the key)`);
      return undefined;
    }
    return { der, fields, notBefore: new Date(parsed.validFrom), notAfter: new Date(parsed.validTo) };
  } catch (error) {
    log.error(`${label}: the certificate cannot be parsed (${error instanceof Error ? error.message : String(error)}); the token shows no certificate`);
    return undefined;
  }
}
