// RSASSA-PSS: CKM_RSA_PKCS_PSS on a digest and CKM_SHAx_RSA_PKCS_PSS, signed in the vault as PS256/384/512.
// Key Vault fixes MGF1 to the signing hash and the salt to the digest length, so the parameters must say exactly that.
import { constants, createHash, createVerify, publicDecrypt, timingSafeEqual } from "node:crypto";
import { CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { hashByMechanism, vaultSignAlgorithm, type HashSpec } from "./algorithms.ts";
import { HashingSigner, SinglePartVerifier, singlePartOnly, StreamingVerifier, type InitContext, type SignOperation, type VaultSignRequest, type VerifyOperation } from "./operation.ts";

function readUlong(data: Buffer, index: number, ulongSize: number): number {
  return ulongSize === 8 ? Number(data.readBigUInt64LE(index * 8)) : data.readUInt32LE(index * 4);
}

/** Validates CK_RSA_PKCS_PSS_PARAMS against what Key Vault can do; returns the hash it names. */
function pssHash(context: InitContext): HashSpec {
  const name = mechanismName(context.spec.type);
  const { parameter } = context.mechanism;
  const size = 3 * context.ulongSize;
  if (parameter.kind !== "bytes" || parameter.data.length !== size) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name} needs a CK_RSA_PKCS_PSS_PARAMS of ${size} bytes`);
  }
  const hashAlg = readUlong(parameter.data, 0, context.ulongSize);
  const mgf = readUlong(parameter.data, 1, context.ulongSize);
  const saltLength = readUlong(parameter.data, 2, context.ulongSize);
  const hash = hashByMechanism(hashAlg);
  if (!hash || !vaultSignAlgorithm("rsa-pss", hash.name)) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: hashAlg 0x${hashAlg.toString(16)} is not SHA-256/384/512, the hashes Key Vault's PS256/384/512 use`);
  }
  if (context.spec.hash && context.spec.hash !== hash.name) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: hashAlg ${hash.name.toUpperCase()} differs from the mechanism's hash`);
  }
  if (mgf !== hash.mgf) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: Key Vault uses MGF1 with ${hash.name.toUpperCase()}, the parameters ask for mgf 0x${mgf.toString(16)}`);
  if (saltLength !== hash.length) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: Key Vault uses a ${hash.length}-byte salt, the parameters ask for ${saltLength}`);
  return hash;
}

function algorithmFor(hash: HashSpec) {
  const spec = vaultSignAlgorithm("rsa-pss", hash.name);
  if (!spec) throw new Error(`no PS algorithm for ${hash.name}`);
  return spec.algorithm;
}

class DigestPssSigner implements SignOperation {
  constructor(
    readonly signatureLength: number,
    private readonly name: string,
    private readonly hash: HashSpec,
  ) {}

  update(): void {
    throw singlePartOnly(this.name);
  }

  finish(data: Buffer | undefined): VaultSignRequest {
    if (!data) throw singlePartOnly(this.name);
    if (data.length !== this.hash.length) {
      throw new Pkcs11Error(CKR.DATA_LEN_RANGE, `${this.name}: input is ${data.length} bytes, a ${this.hash.name.toUpperCase()} digest is ${this.hash.length}`);
    }
    return { algorithm: algorithmFor(this.hash), digest: Buffer.from(data) };
  }
}

export function startSign(context: InitContext): SignOperation {
  const hash = pssHash(context);
  const { signatureLength } = context.material;
  if (!context.spec.hash) return new DigestPssSigner(signatureLength, mechanismName(context.spec.type), hash);
  const algorithm = algorithmFor(hash);
  return new HashingSigner(signatureLength, createHash(hash.name), (digest) => ({ algorithm, digest }));
}

function mgf1(hash: HashSpec, seed: Buffer, length: number): Buffer {
  const blocks: Buffer[] = [];
  const counter = Buffer.alloc(4);
  for (let i = 0; blocks.length * hash.length < length; i++) {
    counter.writeUInt32BE(i);
    blocks.push(createHash(hash.name).update(seed).update(counter).digest());
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/**
 * EMSA-PSS-VERIFY (RFC 8017 §9.1.2) on a digest the caller computed. node:crypto verifies PSS only over the
 * message it hashes itself, so the pre-hashed case checks the encoding here, after node's RSA public operation.
 */
export function verifyPssDigest(context: { publicKey: import("node:crypto").KeyObject; keyBits: number }, hash: HashSpec, digest: Buffer, signature: Buffer): boolean {
  if (digest.length !== hash.length) return false;
  let em: Buffer;
  try {
    em = publicDecrypt({ key: context.publicKey, padding: constants.RSA_NO_PADDING }, signature);
  } catch {
    return false;
  }
  const emBits = context.keyBits - 1;
  const emLength = Math.ceil(emBits / 8);
  if (em.length > emLength) {
    if (em.subarray(0, em.length - emLength).some((byte) => byte !== 0)) return false;
    em = em.subarray(em.length - emLength);
  }
  const saltLength = hash.length;
  if (emLength < hash.length + saltLength + 2 || em[emLength - 1] !== 0xbc) return false;
  const maskedDb = em.subarray(0, emLength - hash.length - 1);
  const h = em.subarray(emLength - hash.length - 1, emLength - 1);
  const topBitsMask = 0xff >> (8 * emLength - emBits);
  if ((maskedDb[0]! & ~topBitsMask) !== 0) return false;
  const db = mgf1(hash, h, maskedDb.length);
  for (let i = 0; i < db.length; i++) db[i] = db[i]! ^ maskedDb[i]!;
  db[0] = db[0]! & topBitsMask;
  const separator = emLength - hash.length - saltLength - 2;
  if (db.subarray(0, separator).some((byte) => byte !== 0) || db[separator] !== 0x01) return false;
  const salt = db.subarray(db.length - saltLength);
  const expected = createHash(hash.name).update(Buffer.alloc(8)).update(digest).update(salt).digest();
  return timingSafeEqual(expected, h);
}

export function startVerify(context: InitContext): VerifyOperation {
  const hash = pssHash(context);
  const { material } = context;
  const name = mechanismName(context.spec.type);
  if (!context.spec.hash) {
    return new SinglePartVerifier(name, material.signatureLength, (data, signature) => {
      if (data.length !== hash.length) throw new Pkcs11Error(CKR.DATA_LEN_RANGE, `${name}: input is ${data.length} bytes, a ${hash.name.toUpperCase()} digest is ${hash.length}`);
      return verifyPssDigest(material, hash, data, signature);
    });
  }
  return new StreamingVerifier(createVerify(hash.name), material.signatureLength, (verifier, signature) =>
    verifier.verify({ key: material.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: hash.length }, signature),
  );
}
