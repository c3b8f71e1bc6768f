// EMSA-PSS encoding and verification (RFC 8017, sections 9.1.1 and 9.1.2) with MGF1 on the same hash and a salt
// as long as the digest, as Key Vault's PS256/384/512 use. node:crypto signs PSS only over a whole message, while
// Key Vault signs a digest the client computed, so the emulator encodes the digest here and applies the raw RSA
// private-key operation (RSA_NO_PADDING) in node:crypto. The hashing itself is node:crypto's.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

type Hash = "sha256" | "sha384" | "sha512";

function mgf1(hash: Hash, seed: Buffer, length: number): Buffer {
  const blocks: Buffer[] = [];
  let produced = 0;
  for (let counter = 0; produced < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    const block = createHash(hash).update(seed).update(c).digest();
    blocks.push(block);
    produced += block.length;
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/** Returns EM, left-padded with zero bytes to `modulusBytes` so it can be fed to the raw RSA operation. */
export function emsaPssEncode(hash: Hash, digest: Buffer, modulusBits: number, modulusBytes: number): Buffer {
  const hLen = digest.length;
  const sLen = hLen;
  const emBits = modulusBits - 1;
  const emLen = Math.ceil(emBits / 8);
  if (emLen < hLen + sLen + 2) throw new Error("modulus too short for PSS with this digest");
  const salt = randomBytes(sLen);
  const mPrime = Buffer.concat([Buffer.alloc(8), digest, salt]);
  const h = createHash(hash).update(mPrime).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - sLen - hLen - 2), Buffer.from([0x01]), salt]);
  const mask = mgf1(hash, h, emLen - hLen - 1);
  for (let i = 0; i < db.length; i++) db[i]! ^= mask[i]!;
  db[0]! &= 0xff >>> (8 * emLen - emBits);
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  return em.length < modulusBytes ? Buffer.concat([Buffer.alloc(modulusBytes - em.length), em]) : em;
}

/** `encoded` is the result of the raw RSA public-key operation on the signature (modulusBytes long). */
export function emsaPssVerify(hash: Hash, digest: Buffer, encoded: Buffer, modulusBits: number): boolean {
  const hLen = digest.length;
  const sLen = hLen;
  const emBits = modulusBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const leading = encoded.length - emLen;
  if (leading < 0 || encoded.subarray(0, leading).some((b) => b !== 0)) return false;
  const em = encoded.subarray(leading);
  if (emLen < hLen + sLen + 2 || em[emLen - 1] !== 0xbc) return false;
  const maskedDb = Buffer.from(em.subarray(0, emLen - hLen - 1));
  const h = em.subarray(emLen - hLen - 1, emLen - 1);
  const topBits = 8 * emLen - emBits;
  if (topBits > 0 && (maskedDb[0]! & (0xff << (8 - topBits)) & 0xff) !== 0) return false;
  const mask = mgf1(hash, h, maskedDb.length);
  for (let i = 0; i < maskedDb.length; i++) maskedDb[i]! ^= mask[i]!;
  maskedDb[0]! &= 0xff >>> topBits;
  const psLen = emLen - hLen - sLen - 2;
  if (maskedDb.subarray(0, psLen).some((b) => b !== 0) || maskedDb[psLen] !== 0x01) return false;
  const salt = maskedDb.subarray(maskedDb.length - sLen);
  const hPrime = createHash(hash).update(Buffer.concat([Buffer.alloc(8), digest, salt])).digest();
  return timingSafeEqual(h, hPrime);
}
