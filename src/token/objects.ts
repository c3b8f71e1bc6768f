// The objects of one vault key, built once from the key material: private key, public key and, when there is one,
// the certificate. By default they share CKA_ID (SHA-1 of the public key) and CKA_LABEL (the key's name in the
// vault, which jarsigner shows as the alias and pesign -c and pkcs11 URIs' object= select); a key made or changed
// through PKCS#11 keeps its own in tags (tags.ts). CA certificates are authority certificates with their own CKA_ID
// and label: hosts such as SunPKCS11 build the signer's chain from a token's certificates by issuer name.
import { createHash, X509Certificate } from "node:crypto";
import { MAX_AUTHORITY_CERTIFICATES } from "../config/types.ts";
import { CK_CERTIFICATE_CATEGORY, CK_UNAVAILABLE_INFORMATION, CKA, CKC, CKK, CKM, CKO } from "../pkcs11/constants.ts";
import { allowedMechanisms } from "../mechanisms/table.ts";
import { AttributeSet } from "./attributes.ts";
import { certificateFields, keyIdentifier, type CertificateFields } from "./der.ts";
import type { KeyMaterial } from "./key-material.ts";

export type ObjectKind = "private" | "public" | "certificate" | "authority" | "secret";
// A secret key (an AES key of a per-key slot) has no private key, so it takes that place.
const KIND_INDEX: Record<ObjectKind, number> = { private: 0, public: 1, certificate: 2, authority: 3, secret: 0 };
const HANDLES_PER_SLOT = 16;
if (KIND_INDEX.authority + MAX_AUTHORITY_CERTIFICATES > HANDLES_PER_SLOT) throw new Error("object handles overlap between slots");

export interface TokenObject {
  handle: number;
  kind: ObjectKind;
  attributes: AttributeSet;
}

/**
 * Handles depend only on the slot, the object kind and (for CA certificates) the position in the chain, so they
 * survive helper restarts (libp11 after fork).
 */
export const objectHandle = (slotIndex: number, kind: ObjectKind, position = 0): number =>
  slotIndex * HANDLES_PER_SLOT + KIND_INDEX[kind] + position + 1;
export const slotOfHandle = (handle: number): number => Math.floor((handle - 1) / HANDLES_PER_SLOT);

/** CKA_LABEL and CKA_ID of one object; an absent id is the key's own (SHA-1 of its public key). */
export interface ObjectIdentity {
  label: string;
  id?: Buffer;
}

/** How one key's objects are numbered, named, and whether PKCS#11 may change or destroy them. */
export interface KeyObjectsSpec {
  handle: (kind: ObjectKind, position?: number) => number;
  private: ObjectIdentity;
  public: ObjectIdentity;
  certificate: ObjectIdentity;
  /** CKA_MODIFIABLE and CKA_DESTROYABLE of the key objects (vault tokens) and the certificate (one this module stored). */
  keysWritable: boolean;
  certificateDestroyable: boolean;
  /** Where the unique ids start, e.g. https://vault/keys/name */
  uniqueBase: string;
  /** A key made (CKA_LOCAL) or imported (never CKA_NEVER_EXTRACTABLE) through this module; unknown otherwise. */
  origin?: "generated" | "imported";
  authorities?: readonly Buffer[];
}

/** The attributes every object of the token has, known before the vault is asked about the key. */
export function common(set: AttributeSet, objectClass: number, isPrivate: boolean, label: string, uniqueId: string, writable = false, destroyable = writable): AttributeSet {
  return set
    .ulong(CKA.CLASS, objectClass)
    .bool(CKA.TOKEN, true)
    .bool(CKA.PRIVATE, isPrivate)
    .bool(CKA.MODIFIABLE, writable)
    .bool(CKA.COPYABLE, false)
    .bool(CKA.DESTROYABLE, destroyable)
    .text(CKA.LABEL, label)
    .text(CKA.UNIQUE_ID, uniqueId);
}

function keyCommon(set: AttributeSet, material: KeyMaterial, side: "private" | "public", id: Buffer, origin: KeyObjectsSpec["origin"]): AttributeSet {
  const subject = material.certificate?.fields.subject;
  set
    .ulong(CKA.KEY_TYPE, material.kind === "RSA" ? CKK.RSA : CKK.EC)
    .bytes(CKA.ID, id)
    .date(CKA.START_DATE, material.key.notBefore)
    .date(CKA.END_DATE, material.key.expiresOn)
    .bool(CKA.DERIVE, false)
    // Unless the key was made through this module, PKCS#11 cannot tell whether the vault made or imported it.
    .bool(CKA.LOCAL, origin === "generated")
    .ulong(CKA.KEY_GEN_MECHANISM, origin === "generated" ? (material.kind === "RSA" ? CKM.RSA_PKCS_KEY_PAIR_GEN : CKM.EC_KEY_PAIR_GEN) : CK_UNAVAILABLE_INFORMATION)
    .ulongs(CKA.ALLOWED_MECHANISMS, allowedMechanisms(material, side))
    .bytes(CKA.SUBJECT, subject ?? Buffer.alloc(0))
    .bytes(CKA.PUBLIC_KEY_INFO, material.spkiDer);
  if (material.rsa) {
    set.bytes(CKA.MODULUS, material.rsa.modulus).bytes(CKA.PUBLIC_EXPONENT, material.rsa.publicExponent).ulong(CKA.MODULUS_BITS, material.rsa.bits);
  }
  if (material.ec) set.bytes(CKA.EC_PARAMS, material.ec.curve.oidDer).bytes(CKA.EC_POINT, material.ec.pointDer);
  return set;
}

/** The attributes every X.509 certificate object has, whoever's it is. */
function certificateObject(set: AttributeSet, der: Buffer, fields: CertificateFields, id: Buffer, category: number, notBefore?: Date, notAfter?: Date): AttributeSet {
  return set
    .ulong(CKA.CERTIFICATE_TYPE, CKC.X_509)
    .bool(CKA.TRUSTED, false)
    .ulong(CKA.CERTIFICATE_CATEGORY, category)
    .bytes(CKA.CHECK_VALUE, createHash("sha1").update(der).digest().subarray(0, 3))
    .date(CKA.START_DATE, notBefore)
    .date(CKA.END_DATE, notAfter)
    .bytes(CKA.PUBLIC_KEY_INFO, fields.subjectPublicKeyInfo)
    .bytes(CKA.ID, id)
    .bytes(CKA.SUBJECT, fields.subject)
    .bytes(CKA.ISSUER, fields.issuer)
    .bytes(CKA.SERIAL_NUMBER, fields.serialNumber)
    .bytes(CKA.VALUE, der)
    .empty(CKA.URL)
    .empty(CKA.HASH_OF_SUBJECT_PUBLIC_KEY)
    .empty(CKA.HASH_OF_ISSUER_PUBLIC_KEY)
    .ulong(CKA.JAVA_MIDP_SECURITY_DOMAIN, 0)
    .ulong(CKA.NAME_HASH_ALGORITHM, CKM.SHA_1);
}

/** A CA certificate's label: its subject's common name, which is what certificate viewers show. */
export function authorityLabel(certificate: X509Certificate): string {
  const commonName = /^CN=(.*)$/m.exec(certificate.subject)?.[1];
  return commonName ?? certificate.subject.replace(/\n/g, ", ");
}

/** A CA certificate object (an authority of a certificate_path chain, or one stored on a vault token). */
export function authorityObject(handle: number, der: Buffer, identity: ObjectIdentity | undefined, uniqueId: string, ulongSize: number, destroyable = false): TokenObject {
  const fields = certificateFields(der);
  const parsed = new X509Certificate(der);
  const id = identity?.id ?? keyIdentifier(fields.subjectPublicKeyInfo);
  const set = common(new AttributeSet(ulongSize), CKO.CERTIFICATE, false, identity?.label ?? authorityLabel(parsed), uniqueId, false, destroyable);
  const attributes = certificateObject(set, der, fields, id, CK_CERTIFICATE_CATEGORY.AUTHORITY, new Date(parsed.validFrom), new Date(parsed.validTo));
  return { handle, kind: "authority", attributes };
}

export function buildObjects(material: KeyMaterial, spec: KeyObjectsSpec, ulongSize: number): TokenObject[] {
  const { uniqueBase, keysWritable } = spec;
  const privateKey = keyCommon(common(new AttributeSet(ulongSize), CKO.PRIVATE_KEY, true, spec.private.label, `${uniqueBase}#private`, keysWritable), material, "private", spec.private.id ?? material.id, spec.origin)
    .bool(CKA.SENSITIVE, true)
    .bool(CKA.DECRYPT, material.can.decrypt && material.kind === "RSA")
    .bool(CKA.SIGN, material.can.sign)
    .bool(CKA.SIGN_RECOVER, false)
    .bool(CKA.UNWRAP, material.can.unwrap && material.kind === "RSA")
    .bool(CKA.EXTRACTABLE, false)
    .bool(CKA.ALWAYS_SENSITIVE, spec.origin !== "imported")
    .bool(CKA.NEVER_EXTRACTABLE, spec.origin !== "imported")
    .bool(CKA.WRAP_WITH_TRUSTED, false)
    .bool(CKA.ALWAYS_AUTHENTICATE, false);
  if (material.kind === "RSA") {
    for (const type of [CKA.PRIVATE_EXPONENT, CKA.PRIME_1, CKA.PRIME_2, CKA.EXPONENT_1, CKA.EXPONENT_2, CKA.COEFFICIENT]) privateKey.sensitive(type);
  } else {
    privateKey.sensitive(CKA.VALUE);
  }
  const publicKey = keyCommon(common(new AttributeSet(ulongSize), CKO.PUBLIC_KEY, false, spec.public.label, `${uniqueBase}#public`, keysWritable, false), material, "public", spec.public.id ?? material.id, spec.origin)
    .bool(CKA.ENCRYPT, material.can.encrypt && material.kind === "RSA")
    .bool(CKA.VERIFY, material.can.verify)
    .bool(CKA.VERIFY_RECOVER, false)
    .bool(CKA.WRAP, material.can.wrap && material.kind === "RSA")
    .bool(CKA.TRUSTED, false);
  const objects: TokenObject[] = [
    { handle: spec.handle("private"), kind: "private", attributes: privateKey },
    { handle: spec.handle("public"), kind: "public", attributes: publicKey },
  ];
  const certificate = material.certificate;
  if (certificate) {
    const set = common(new AttributeSet(ulongSize), CKO.CERTIFICATE, false, spec.certificate.label, `${uniqueBase}#certificate`, false, spec.certificateDestroyable);
    const attributes = certificateObject(set, certificate.der, certificate.fields, spec.certificate.id ?? material.id, CK_CERTIFICATE_CATEGORY.TOKEN_USER, certificate.notBefore, certificate.notAfter);
    objects.push({ handle: spec.handle("certificate"), kind: "certificate", attributes });
  }
  (spec.authorities ?? []).slice(0, MAX_AUTHORITY_CERTIFICATES).forEach((der, position) => {
    objects.push(authorityObject(spec.handle("authority", position), der, undefined, `${uniqueBase}#authority-${position + 1}`, ulongSize));
  });
  return objects;
}
