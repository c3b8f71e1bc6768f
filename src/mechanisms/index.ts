// Init-time dispatch: checks a mechanism against the table and the key, then lets the family build the operation.
import type { Mechanism } from "../protocol/codec.ts";
import type { KeyMaterial } from "../token/key-material.ts";
import { CKF, CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { mechanismSpec, type MechanismFamily, type MechanismSpec } from "./table.ts";
import type { DecryptOperation, EncryptOperation, InitContext, SignOperation, VaultSignRequest, VerifyOperation } from "./operation.ts";
import { startDigest, type DigestOperation } from "./digest.ts";
import * as rsaPkcs1 from "./rsa-pkcs1.ts";
import * as rsaPss from "./rsa-pss.ts";
import * as ecdsa from "./ecdsa.ts";
import * as rsaOaep from "./rsa-oaep.ts";

interface Family {
  sign?: (context: InitContext) => SignOperation;
  verify?: (context: InitContext) => VerifyOperation;
  encrypt?: (context: InitContext) => EncryptOperation;
  decrypt?: (context: InitContext) => DecryptOperation;
}

const FAMILIES: Record<Exclude<MechanismFamily, "digest" | "key-pair-gen" | "aes" | "aes-wrap" | "secret-key-gen">, Family> = {
  "rsa-pkcs1": { sign: rsaPkcs1.startSign, verify: rsaPkcs1.startVerify, encrypt: rsaPkcs1.startEncrypt, decrypt: rsaPkcs1.startDecrypt },
  "rsa-pss": { sign: rsaPss.startSign, verify: rsaPss.startVerify },
  ecdsa: { sign: ecdsa.startSign, verify: ecdsa.startVerify },
  "rsa-oaep": { encrypt: rsaOaep.startEncrypt, decrypt: rsaOaep.startDecrypt },
};

type KeyOperation = "sign" | "verify" | "encrypt" | "decrypt";
const OPERATION_FLAG: Record<KeyOperation, number> = { sign: CKF.SIGN, verify: CKF.VERIFY, encrypt: CKF.ENCRYPT, decrypt: CKF.DECRYPT };

function checkedSpec(mechanism: Mechanism, flag: number, what: string): MechanismSpec {
  const spec = mechanismSpec(mechanism.type);
  if (!spec || (spec.flags & flag) === 0) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${mechanismName(mechanism.type)} cannot ${what} with this module`);
  if (mechanism.parameter.kind === "malformed") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${mechanismName(mechanism.type)}: the parameter could not be read`);
  return spec;
}

function start<K extends KeyOperation>(operation: K, mechanism: Mechanism, material: KeyMaterial, ulongSize: number): ReturnType<NonNullable<Family[K]>> {
  const spec = checkedSpec(mechanism, OPERATION_FLAG[operation], operation);
  const name = mechanismName(spec.type);
  if (spec.keyKind !== material.kind) throw new Pkcs11Error(CKR.KEY_TYPE_INCONSISTENT, `${name} needs an ${spec.keyKind} key, ${material.key.name} is ${material.kind}`);
  if (material.keyBits < spec.minKeyBits || material.keyBits > spec.maxKeyBits) {
    throw new Pkcs11Error(CKR.KEY_SIZE_RANGE, `${name} supports ${spec.minKeyBits}-${spec.maxKeyBits}-bit keys, ${material.key.name} has ${material.keyBits} bits`);
  }
  const factory = FAMILIES[spec.family as Exclude<MechanismFamily, "digest" | "key-pair-gen" | "aes" | "aes-wrap" | "secret-key-gen">][operation];
  if (!factory) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${name} cannot ${operation}`);
  return factory({ mechanism, spec, material, ulongSize }) as ReturnType<NonNullable<Family[K]>>;
}

export const startSign = (mechanism: Mechanism, material: KeyMaterial, ulongSize: number): SignOperation => start("sign", mechanism, material, ulongSize);
export const startVerify = (mechanism: Mechanism, material: KeyMaterial, ulongSize: number): VerifyOperation => start("verify", mechanism, material, ulongSize);
export const startEncrypt = (mechanism: Mechanism, material: KeyMaterial, ulongSize: number): EncryptOperation => start("encrypt", mechanism, material, ulongSize);
export const startDecrypt = (mechanism: Mechanism, material: KeyMaterial, ulongSize: number): DecryptOperation => start("decrypt", mechanism, material, ulongSize);

export function startDigestOperation(mechanism: Mechanism, ulongSize: number): DigestOperation {
  const spec = checkedSpec(mechanism, CKF.DIGEST, "digest");
  return startDigest({ mechanism, spec, ulongSize });
}

export type { DigestOperation, DecryptOperation, EncryptOperation, SignOperation, VaultSignRequest, VerifyOperation };
