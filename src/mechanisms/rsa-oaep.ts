// RSAES-OAEP: CKM_RSA_PKCS_OAEP encrypts locally with the public key and decrypts in the vault as RSA-OAEP
// (SHA-1) or RSA-OAEP-256. The vault takes no label, so a decrypt with a label cannot be honoured.
import { constants, publicEncrypt } from "node:crypto";
import { CKR, CKZ_DATA_SPECIFIED, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { hashByMechanism, vaultDecryptAlgorithm, type HashSpec } from "./algorithms.ts";
import { rsaVaultDecrypt, type DecryptOperation, type EncryptOperation, type InitContext } from "./operation.ts";

interface OaepParameters {
  hash: HashSpec;
  label: Buffer;
}

function oaepParameters(context: InitContext): OaepParameters {
  const name = mechanismName(context.spec.type);
  const { parameter } = context.mechanism;
  if (parameter.kind !== "oaep") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name} needs a CK_RSA_PKCS_OAEP_PARAMS`);
  const hash = hashByMechanism(parameter.hashAlg);
  if (!hash) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: hashAlg 0x${parameter.hashAlg.toString(16)} is not a supported hash`);
  if (parameter.mgf !== hash.mgf) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: MGF1 must use the OAEP hash ${hash.name.toUpperCase()} (mgf 0x${parameter.mgf.toString(16)} given)`);
  }
  if (parameter.source !== CKZ_DATA_SPECIFIED && !(parameter.source === 0 && parameter.sourceData.length === 0)) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: source must be CKZ_DATA_SPECIFIED`);
  }
  return { hash, label: Buffer.from(parameter.sourceData) };
}

export function startEncrypt(context: InitContext): EncryptOperation {
  const { hash, label } = oaepParameters(context);
  const name = mechanismName(context.spec.type);
  const { publicKey, signatureLength: modulusLength } = context.material;
  const maxInput = modulusLength - 2 * hash.length - 2;
  return {
    outputLength: modulusLength,
    encrypt(data: Buffer): Buffer {
      if (data.length > maxInput) throw new Pkcs11Error(CKR.DATA_LEN_RANGE, `${name}: ${data.length} bytes exceed the ${maxInput} bytes OAEP-${hash.name.toUpperCase()} can encrypt with this key`);
      return publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash.name, ...(label.length ? { oaepLabel: label } : {}) }, data);
    },
  };
}

export function startDecrypt(context: InitContext): DecryptOperation {
  const { hash, label } = oaepParameters(context);
  const name = mechanismName(context.spec.type);
  if (label.length > 0) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: Key Vault does not support an OAEP label`);
  const spec = vaultDecryptAlgorithm("oaep", hash.name);
  if (!spec) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name}: Key Vault decrypts OAEP with SHA-1 or SHA-256 only, not ${hash.name.toUpperCase()}`);
  return rsaVaultDecrypt(spec.algorithm, name, context.material.signatureLength);
}
