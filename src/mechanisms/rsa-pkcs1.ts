// RSASSA-PKCS1-v1_5 (CKM_RSA_PKCS on a DigestInfo, CKM_SHAx_RSA_PKCS) and RSAES-PKCS1-v1_5 (CKM_RSA_PKCS encrypt
// locally, decrypt in the vault as RSA1_5).
import { constants, createHash, createVerify, publicDecrypt, publicEncrypt, timingSafeEqual } from "node:crypto";
import { CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { HASHES, vaultDecryptAlgorithm, vaultSignAlgorithm, type HashName } from "./algorithms.ts";
import {
  HashingSigner,
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
    if (!digestInfo) {
      throw new Pkcs11Error(CKR.DATA_INVALID, `${this.name}: the ${data.length}-byte input is not a DER DigestInfo for SHA-256/384/512; Key Vault signs only those (hash the data, or use CKM_SHA256_RSA_PKCS)`);
    }
    return { algorithm: vaultAlgorithmFor(digestInfo.hash, this.name).algorithm, digest: Buffer.from(digestInfo.digest) };
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
  const modulusLength = context.material.signatureLength;
  const spec = vaultDecryptAlgorithm("pkcs1");
  if (!spec) throw new Error("RSA1_5 missing from the Key Vault algorithm table");
  return {
    algorithm: spec.algorithm,
    maxOutputLength: modulusLength,
    check(ciphertext: Buffer): void {
      if (ciphertext.length !== modulusLength) {
        throw new Pkcs11Error(CKR.ENCRYPTED_DATA_LEN_RANGE, `${name}: ciphertext is ${ciphertext.length} bytes, the modulus ${modulusLength}`);
      }
    },
  };
}
