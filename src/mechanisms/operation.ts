// What a mechanism family hands to a session at Init time. Sessions keep the object until the operation ends;
// the family decides the vault algorithm, the digest it signs, and the local verify/encrypt.
import type { Hash, Verify } from "node:crypto";
import type { DecryptAlgorithm, SignAlgorithm } from "../vault/types.ts";
import type { Mechanism } from "../protocol/codec.ts";
import type { KeyMaterial } from "../token/key-material.ts";
import { CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { MechanismSpec } from "./table.ts";

export interface InitContext {
  mechanism: Mechanism;
  spec: MechanismSpec;
  material: KeyMaterial;
  /** sizeof(CK_ULONG) on the host, for parameter structs. */
  ulongSize: number;
}

export interface VaultSignRequest {
  algorithm: SignAlgorithm;
  digest: Buffer;
}

export interface SignOperation {
  readonly signatureLength: number;
  /** C_SignUpdate. */
  update(data: Buffer): void;
  /** The digest to send to the vault: `data` for C_Sign, undefined for C_SignFinal. Throws DATA_* for bad input. */
  finish(data: Buffer | undefined): VaultSignRequest;
}

export interface VerifyOperation {
  update(data: Buffer): void;
  /** `data` for C_Verify, undefined for C_VerifyFinal. Throws SIGNATURE_LEN_RANGE for a wrong-size signature. */
  verify(data: Buffer | undefined, signature: Buffer): boolean;
}

export interface EncryptOperation {
  readonly outputLength: number;
  encrypt(data: Buffer): Buffer;
}

export interface DecryptOperation {
  readonly algorithm: DecryptAlgorithm;
  /** The longest plaintext, for a length query (the modulus length). */
  readonly maxOutputLength: number;
  /** Checks the ciphertext before it goes to the vault. */
  check(ciphertext: Buffer): void;
}

/** RSA decryption in the vault: every RSA ciphertext is exactly the modulus long, and so is the longest plaintext. */
export function rsaVaultDecrypt(algorithm: DecryptAlgorithm, name: string, modulusLength: number): DecryptOperation {
  return {
    algorithm,
    maxOutputLength: modulusLength,
    check(ciphertext: Buffer): void {
      if (ciphertext.length !== modulusLength) {
        throw new Pkcs11Error(CKR.ENCRYPTED_DATA_LEN_RANGE, `${name}: ciphertext is ${ciphertext.length} bytes, the modulus ${modulusLength}`);
      }
    },
  };
}

export const singlePartOnly = (name: string): Pkcs11Error =>
  new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, `${name} is a single-part mechanism: use C_Sign/C_Verify, not the Update/Final calls`);

/** Sign operation of a hash-and-sign mechanism: hashes locally, in as many parts as the caller likes. */
export class HashingSigner implements SignOperation {
  constructor(
    readonly signatureLength: number,
    private readonly hash: Hash,
    private readonly toRequest: (digest: Buffer) => VaultSignRequest,
  ) {}

  update(data: Buffer): void {
    this.hash.update(data);
  }

  finish(data: Buffer | undefined): VaultSignRequest {
    if (data) this.hash.update(data);
    return this.toRequest(this.hash.digest());
  }
}

/** Verify operation built on node:crypto's streaming Verify. */
export class StreamingVerifier implements VerifyOperation {
  constructor(
    private readonly verifier: Verify,
    private readonly signatureLength: number,
    private readonly check: (verifier: Verify, signature: Buffer) => boolean,
  ) {}

  update(data: Buffer): void {
    this.verifier.update(data);
  }

  verify(data: Buffer | undefined, signature: Buffer): boolean {
    if (signature.length !== this.signatureLength) throw new Pkcs11Error(CKR.SIGNATURE_LEN_RANGE, `signature is ${signature.length} bytes, expected ${this.signatureLength}`);
    if (data) this.verifier.update(data);
    return this.check(this.verifier, signature);
  }
}

/** Verify operation over one buffer (the mechanisms whose input is a digest). */
export class SinglePartVerifier implements VerifyOperation {
  constructor(
    private readonly name: string,
    private readonly signatureLength: number,
    private readonly check: (data: Buffer, signature: Buffer) => boolean,
  ) {}

  update(): void {
    throw singlePartOnly(this.name);
  }

  verify(data: Buffer | undefined, signature: Buffer): boolean {
    if (!data) throw singlePartOnly(this.name);
    if (signature.length !== this.signatureLength) throw new Pkcs11Error(CKR.SIGNATURE_LEN_RANGE, `signature is ${signature.length} bytes, expected ${this.signatureLength}`);
    return this.check(data, signature);
  }
}

export function noParameter(context: { mechanism: Mechanism }, name: string): void {
  const { parameter } = context.mechanism;
  if (parameter.kind !== "none" && !(parameter.kind === "bytes" && parameter.data.length === 0)) {
    throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${name} takes no parameter`);
  }
}
