// Just enough DER to slice fields out of a certificate verbatim and to wrap the two values PKCS#11 wants wrapped.
// Slicing (instead of decoding and re-encoding) keeps CKA_SUBJECT/ISSUER/SERIAL_NUMBER byte-identical to the
// certificate, which is what clients compare them against.
import { createHash } from "node:crypto";

export interface Tlv {
  tag: number;
  /** The whole element: tag, length and contents. */
  element: Buffer;
  contents: Buffer;
}

export function readTlv(buffer: Buffer, offset: number): Tlv & { end: number } {
  if (offset + 2 > buffer.length) throw new Error("DER element truncated");
  const tag = buffer[offset]!;
  let length = buffer[offset + 1]!;
  let headerLength = 2;
  if (length & 0x80) {
    const lengthBytes = length & 0x7f;
    if (lengthBytes === 0 || lengthBytes > 4 || offset + 2 + lengthBytes > buffer.length) throw new Error("DER length invalid");
    length = buffer.readUIntBE(offset + 2, lengthBytes);
    headerLength += lengthBytes;
  }
  const end = offset + headerLength + length;
  if (end > buffer.length) throw new Error("DER element truncated");
  return { tag, element: buffer.subarray(offset, end), contents: buffer.subarray(offset + headerLength, end), end };
}

/** The children of a constructed element. */
export function children(contents: Buffer): Tlv[] {
  const out: Tlv[] = [];
  let offset = 0;
  while (offset < contents.length) {
    const tlv = readTlv(contents, offset);
    out.push(tlv);
    offset = tlv.end;
  }
  return out;
}

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function octetString(contents: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x04]), lengthBytes(contents.length), contents]);
}

export interface CertificateFields {
  serialNumber: Buffer; // the whole DER INTEGER
  issuer: Buffer;
  subject: Buffer;
  subjectPublicKeyInfo: Buffer;
}

/** Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial, signature, issuer, validity, subject, spki, ... } ... } */
export function certificateFields(der: Buffer): CertificateFields {
  const certificate = readTlv(der, 0);
  const tbs = children(certificate.contents)[0];
  if (!tbs) throw new Error("certificate has no TBSCertificate");
  const fields = children(tbs.contents);
  const start = fields[0]?.tag === 0xa0 ? 1 : 0;
  const [serial, , issuer, , subject, spki] = fields.slice(start);
  if (!serial || !issuer || !subject || !spki) throw new Error("TBSCertificate is missing fields");
  return { serialNumber: serial.element, issuer: issuer.element, subject: subject.element, subjectPublicKeyInfo: spki.element };
}

/** The contents of the subjectPublicKey BIT STRING of an SPKI, without the unused-bits byte (RFC 5280 §4.2.1.2). */
export function subjectPublicKeyBits(spki: Buffer): Buffer {
  const [, bitString] = children(readTlv(spki, 0).contents);
  if (!bitString || bitString.tag !== 0x03) throw new Error("SubjectPublicKeyInfo has no BIT STRING");
  return bitString.contents.subarray(1);
}

/** A key identifier by RFC 5280 §4.2.1.2 method 1: the SHA-1 of the subjectPublicKey bits. The module's CKA_ID. */
export function keyIdentifier(spki: Buffer): Buffer {
  return createHash("sha1").update(subjectPublicKeyBits(spki)).digest();
}
