// RSASSA-PKCS1-v1_5 (CKM_RSA_PKCS on a DigestInfo, CKM_SHAx_RSA_PKCS) and RSAES-PKCS1-v1_5 (CKM_RSA_PKCS encrypt
// locally, decrypt in the vault as RSA1_5).
import { constants, createHash, createVerify, publicDecrypt, publicEncrypt, timingSafeEqual } from "node:crypto";
import { CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { HASHES, vaultDecryptAlgorithm, vaultSignAlgorithm, type HashName } from "./algorithms.ts";
import {
  HashingSigner,
  rsaVaultDecrypt,
  noParameter,
  SinglePartVerifier,
  singlePartOnly,
  StreamingVerifier,
  type DecryptOperation,
  type EncryptOperation,
  type InitContext,
  type SignOperation,
  type VaultSignRequest,
  type VerifyOperation,
} from "./operation.ts";

/** PKCS#1 v1.5 type 1 and type 2 padding take at least 11 bytes. */
const PADDING_OVERHEAD = 11;

function vaultAlgorithmFor(hash: HashName, name: string) {
  const spec = vaultSignAlgorithm("rsa-pkcs1", hash);
  if (!spec) throw new Pkcs11Error(CKR.DATA_INVALID, `${name}: Key Vault cannot sign a ${hash.toUpperCase()} DigestInfo (RS256/384/512 only)`);
  return spec;
}

/** Which DigestInfo the input is, judged by its DER prefix and exact length, never by its length alone. */
export function parseDigestInfo(data: Buffer): { hash: HashName; digest: Buffer } | undefined {
  for (const hash of Object.values(HASHES)) {
    const prefix = hash.digestInfoPrefix;
    if (data.length === prefix.length + hash.length && data.subarray(0, prefix.length).equals(prefix)) {
      return { hash: hash.name, digest: data.subarray(prefix.length) };
    }
  }
  return undefined;
}

/**
 * True for a strict DER DigestInfo { AlgorithmIdentifier { OID, NULL? }, OCTET STRING } of any hash: what PKCS#1
 * v1.5 signers such as pkcs11-tool --test (SHA-1) hand to CKM_RSA_PKCS. Arbitrary bytes are not one.
 */
export function isDerDigestInfo(data: Buffer): boolean {
  // Every field of a DigestInfo for a hash of up to 64 bytes fits DER's short length form.
  const at = (i: number): number => data[i] ?? -1;
  if (at(0) !== 0x30 || at(1) !== data.length - 2) return false;
  if (at(2) !== 0x30) return false;
  const algorithmEnd = 4 + at(3);
  if (at(4) !== 0x06 || at(5) < 1 || 6 + at(5) > algorithmEnd) return false;
  const afterOid = 6 + at(5);
  const parametersOk = afterOid === algorithmEnd || (afterOid + 2 === algorithmEnd && at(afterOid) === 0x05 && at(afterOid + 1) === 0x00);
  if (!parametersOk) return false;
  return at(algorithmEnd) === 0x04 && at(algorithmEnd + 1) >= 16 && algorithmEnd + 2 + at(algorithmEnd + 1) === data.length;
}

class DigestInfoSigner implements SignOperation {
  constructor(
    readonly signatureLength: number,
    private readonly name: string,
  ) {}

  update(): void {
    throw singlePartOnly(this.name);
  }

  finish(data: Buffer | undefined): VaultSignRequest {
    if (!data) throw singlePartOnly(this.name);
    if (data.length > this.signatureLength - PADDING_OVERHEAD) {
      throw new Pkcs11Error(CKR.DATA_LEN_RANGE, `${this.name}: ${data.length} bytes of input exceed the ${this.signatureLength - PADDING_OVERHEAD} a ${this.signatureLength * 8}-bit key can sign`);
    }
    const digestInfo = parseDigestInfo(data);
    const spec = digestInfo && vaultSignAlgorithm("rsa-pkcs1", digestInfo.hash);
    if (digestInfo && spec) return { algorithm: spec.algorithm, digest: Buffer.from(digestInfo.digest) };
    // Another hash's DigestInfo (SHA-1, SHA-224, ...): Key Vault's RSNULL pads exactly these bytes, which is what
    // CKM_RSA_PKCS means. Anything that is not a DigestInfo is refused rather than signed blind.
    if (isDerDigestInfo(data)) return { algorithm: "RSNULL", digest: Buffer.from(data) };
    throw new Pkcs11Error(CKR.DATA_INVALID, `${this.name}: the ${data.length}-byte input is not a DER DigestInfo; CKM_RSA_PKCS signs a DigestInfo (hash the data first, or use CKM_SHA256_RSA_PKCS)`);
  }
}

export function startSign(context: InitContext): SignOperation {
  const name = mechanismName(context.spec.type);
  noParameter(context, name);
  const { signatureLength } = context.material;
  const hash = context.spec.hash;
  if (!hash) return new DigestInfoSigner(signatureLength, name);
  const algorithm = vaultAlgorithmFor(hash, name).algorithm;
  return new HashingSigner(signatureLength, createHash(hash), (digest) => ({ algorithm, digest }));
}

export function startVerify(context: InitContext): VerifyOperation {
  const name = mechanismName(context.spec.type);
  noParameter(context, name);
  const { publicKey, signatureLength } = context.material;
  const hash = context.spec.hash;
  if (!hash) {
    // CKM_RSA_PKCS verifies whatever the signer padded: recover the type 1 block's payload and compare.
    return new SinglePartVerifier(name, signatureLength, (data, signature) => {
      let recovered: Buffer;
      try {
        recovered = publicDecrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature);
      } catch {
        return false;
      }
      return recovered.length === data.length && timingSafeEqual(recovered, data);
    });
  }
  return new StreamingVerifier(createVerify(hash), signatureLength, (verifier, signature) =>
    verifier.verify({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature),
  );
}

export function startEncrypt(context: InitContext): EncryptOperation {
  const name = mechanismName(context.spec.type);
  noParameter(context, name);
  const { publicKey, signatureLength: modulusLength } = context.material;
  return {
    outputLength: modulusLength,
    encrypt(data: Buffer): Buffer {
      if (data.length > modulusLength - PADDING_OVERHEAD) {
        throw new Pkcs11Error(CKR.DATA_LEN_RANGE, `${name}: ${data.length} bytes exceed the ${modulusLength - PADDING_OVERHEAD} bytes a ${modulusLength * 8}-bit key can encrypt`);
      }
      return publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, data);
    },
  };
}

export function startDecrypt(context: InitContext): DecryptOperation {
  const name = mechanismName(context.spec.type);
  noParameter(context, name);
  const spec = vaultDecryptAlgorithm("pkcs1");
  if (!spec) throw new Error("RSA1_5 missing from the Key Vault algorithm table");
  return rsaVaultDecrypt(spec.algorithm, name, context.material.signatureLength);
}
