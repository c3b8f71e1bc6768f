// The operation calls of a session: find, sign, verify, encrypt, decrypt, digest. Each follows the spec's rules
// for what ends an operation: a length query or CKR_BUFFER_TOO_SMALL keeps it (and never calls the vault), any
// other outcome of the finishing call ends it, errors included.
import type { Attribute, Mechanism, MessageParameter, OutRequest } from "../protocol/codec.ts";
import type { VaultBackend } from "../vault/types.ts";
import { CKF, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { startDecrypt, startDigestOperation, startEncrypt, startSign, startVerify, type VaultSignRequest } from "../mechanisms/index.ts";
import type { KeyMaterial } from "../token/key-material.ts";
import type { FoundObject } from "../token/token.ts";
import { vaultFailure } from "../token/vault-errors.ts";
import { andThen, type Immediate } from "./immediate.ts";
import type { ActiveSign, Session } from "./session.ts";
import { log } from "../log/log.ts";

export interface OutResult {
  rv: number;
  length: number;
  data?: Buffer;
}

/** The length-query and buffer rules for an output of known length; undefined means "produce it now". */
function sizeOnly(out: OutRequest, length: number): OutResult | undefined {
  if (!out.present) return { rv: CKR.OK, length };
  if (out.capacity < length) return { rv: CKR.BUFFER_TOO_SMALL, length };
  return undefined;
}

export class Operations {
  constructor(
    private readonly backend: VaultBackend,
    private readonly ulongSize: number,
  ) {}

  // ---- objects ---------------------------------------------------------------------------------------------

  object(session: Session, handle: number): Immediate<FoundObject> {
    return session.token.object(handle);
  }

  findInit(session: Session, template: Attribute[]): Immediate<void> {
    if (session.find) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    // A find that can match a certificate still pending after a passing failure waits for its fetch (key-token.ts).
    return andThen(session.token.find(template), (handles) => {
      session.find = { handles, position: 0 };
    });
  }

  find(session: Session, maxCount: number): number[] {
    const find = session.find;
    if (!find) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    const handles = find.handles.slice(find.position, find.position + Math.max(0, maxCount));
    find.position += handles.length;
    return handles;
  }

  findFinal(session: Session): void {
    if (!session.find) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.find = undefined;
  }

  // ---- keys for Init ---------------------------------------------------------------------------------------

  /** The key object for an Init call, with the spec's checks on class and permission. */
  private key(session: Session, handle: number, side: "private" | "public", permitted: (material: KeyMaterial) => boolean, purpose: string): Immediate<KeyMaterial> {
    let found: Immediate<FoundObject>;
    try {
      found = session.token.object(handle);
    } catch (error) {
      throw asKeyHandleError(error);
    }
    if (found instanceof Promise) return found.then((object) => this.checkedKey(session, object, side, permitted, purpose), (error: unknown) => Promise.reject(asKeyHandleError(error)));
    return this.checkedKey(session, found, side, permitted, purpose);
  }

  private checkedKey(session: Session, { object, material }: FoundObject, side: "private" | "public", permitted: (material: KeyMaterial) => boolean, purpose: string): KeyMaterial {
    const handle = object.handle;
    if (object.kind === "certificate" || object.kind === "authority" || !material) throw new Pkcs11Error(CKR.KEY_HANDLE_INVALID, `object ${handle} is a certificate, not a key`);
    if (object.kind !== side) throw new Pkcs11Error(CKR.KEY_TYPE_INCONSISTENT, `${purpose} needs the ${side} key; object ${handle} is the ${object.kind} key`);
    if (!permitted(material)) {
      throw new Pkcs11Error(CKR.KEY_FUNCTION_NOT_PERMITTED, `${session.token.label}: the key's key_ops (${material.key.keyOps.join(", ") || "none"}) do not allow ${purpose}`);
    }
    return material;
  }

  // ---- sign ------------------------------------------------------------------------------------------------

  signInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    if (session.sign) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    return andThen(this.key(session, keyHandle, "private", (m) => m.can.sign, "signing"), (material) => {
      session.sign = { op: startSign(mechanism, material, this.ulongSize), material, multiPart: false };
    });
  }

  sign(session: Session, data: Buffer | undefined, out: OutRequest): Immediate<OutResult> {
    const active = session.sign;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    if (data && active.multiPart) {
      session.sign = undefined;
      throw new Pkcs11Error(CKR.OPERATION_ACTIVE, "C_Sign cannot finish a multi-part signature: call C_SignFinal");
    }
    const sized = sizeOnly(out, active.op.signatureLength);
    if (sized) return sized;
    session.sign = undefined;
    return this.signInVault(session, active, active.op.finish(data));
  }

  private async signInVault(session: Session, active: ActiveSign, request: VaultSignRequest): Promise<OutResult> {
    let signature: Buffer;
    try {
      signature = await this.backend.sign(active.material.key, request.algorithm, request.digest);
    } catch (error) {
      throw vaultFailure(error, session.token.label, "sign");
    }
    return { rv: CKR.OK, length: active.op.signatureLength, data: fitSignature(signature, active.op.signatureLength, active.material) };
  }

  signUpdate(session: Session, data: Buffer): void {
    const active = session.sign;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    try {
      active.op.update(data);
      active.multiPart = true;
    } catch (error) {
      session.sign = undefined;
      throw error;
    }
  }

  // ---- verify ----------------------------------------------------------------------------------------------

  verifyInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    if (session.verify) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    return andThen(this.key(session, keyHandle, "public", (m) => m.can.verify, "verification"), (material) => {
      session.verify = { op: startVerify(mechanism, material, this.ulongSize), multiPart: false };
    });
  }

  verify(session: Session, data: Buffer | undefined, signature: Buffer): void {
    const active = session.verify;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.verify = undefined;
    if (data && active.multiPart) throw new Pkcs11Error(CKR.OPERATION_ACTIVE, "C_Verify cannot finish a multi-part verification: call C_VerifyFinal");
    if (!active.op.verify(data, signature)) throw new Pkcs11Error(CKR.SIGNATURE_INVALID);
  }

  verifyUpdate(session: Session, data: Buffer): void {
    const active = session.verify;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    try {
      active.op.update(data);
      active.multiPart = true;
    } catch (error) {
      session.verify = undefined;
      throw error;
    }
  }

  // ---- encrypt (local) -------------------------------------------------------------------------------------

  encryptInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    if (session.encrypt) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    return andThen(this.key(session, keyHandle, "public", (m) => m.can.encrypt && m.kind === "RSA", "encryption"), (material) => {
      session.encrypt = startEncrypt(mechanism, material, this.ulongSize);
    });
  }

  encrypt(session: Session, data: Buffer, out: OutRequest): OutResult {
    const op = session.encrypt;
    if (!op) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    const sized = sizeOnly(out, op.outputLength);
    if (sized) return sized;
    session.encrypt = undefined;
    const ciphertext = op.encrypt(data);
    return { rv: CKR.OK, length: ciphertext.length, data: ciphertext };
  }

  /** RSA encryption is single-part: the Update/Final calls end the operation with an error. */
  encryptMultiPart(session: Session): never {
    if (!session.encrypt) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.encrypt = undefined;
    throw new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, "RSA encryption is single-part: use C_Encrypt");
  }

  // ---- decrypt (in the vault) ------------------------------------------------------------------------------

  decryptInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    if (session.decrypt) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    return andThen(this.key(session, keyHandle, "private", (m) => m.can.decrypt && m.kind === "RSA", "decryption"), (material) => {
      session.decrypt = { op: startDecrypt(mechanism, material, this.ulongSize), material };
    });
  }

  async decrypt(session: Session, ciphertext: Buffer, out: OutRequest): Promise<OutResult> {
    const active = session.decrypt;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    // The kept plaintext answers only for the ciphertext it came from; any other gets the upper bound.
    const kept = active.pending?.ciphertext.equals(ciphertext) ? active.pending.plaintext : undefined;
    if (!out.present) return { rv: CKR.OK, length: kept?.length ?? active.op.maxOutputLength };
    let plaintext: Buffer;
    if (kept) {
      plaintext = kept;
    } else {
      try {
        active.op.check(ciphertext);
        plaintext = await this.backend.decrypt(active.material.key, active.op.algorithm, ciphertext);
      } catch (error) {
        session.decrypt = undefined;
        throw vaultFailure(error, session.token.label, "decrypt");
      }
    }
    if (out.capacity < plaintext.length) {
      active.pending = { ciphertext: Buffer.from(ciphertext), plaintext };
      return { rv: CKR.BUFFER_TOO_SMALL, length: plaintext.length };
    }
    session.decrypt = undefined;
    return { rv: CKR.OK, length: plaintext.length, data: plaintext };
  }

  decryptMultiPart(session: Session): never {
    if (!session.decrypt) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.decrypt = undefined;
    throw new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, "RSA decryption is single-part: use C_Decrypt");
  }

  // ---- digest (local) --------------------------------------------------------------------------------------

  digestInit(session: Session, mechanism: Mechanism): void {
    if (session.digest) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    session.digest = { op: startDigestOperation(mechanism, this.ulongSize), multiPart: false };
  }

  digest(session: Session, data: Buffer | undefined, out: OutRequest): OutResult {
    const active = session.digest;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    const sized = sizeOnly(out, active.op.length);
    if (sized) return sized;
    session.digest = undefined;
    if (data && active.multiPart) throw new Pkcs11Error(CKR.OPERATION_ACTIVE, "C_Digest cannot finish a multi-part digest: call C_DigestFinal");
    const digest = active.op.finish(data);
    return { rv: CKR.OK, length: digest.length, data: digest };
  }

  digestUpdate(session: Session, data: Buffer): void {
    const active = session.digest;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    active.op.update(data);
    active.multiPart = true;
  }

  digestKey(session: Session): never {
    if (!session.digest) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.digest = undefined;
    throw new Pkcs11Error(CKR.KEY_INDIGESTIBLE, "the module's keys live in the vault and cannot be digested");
  }

  // ---- message-based encryption (v3.0) ------------------------------------------------------------------

  messageEncryptInit(_session: Session, _mechanism: Mechanism, _keyHandle: number): Immediate<void> {
    throw new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, "C_MessageEncryptInit is not offered yet");
  }

  /** On CKR_OK with output, `iv` and `tag` are what the shim writes back into CK_GCM_MESSAGE_PARAMS. */
  encryptMessage(_session: Session, _parameter: MessageParameter, _aad: Buffer, _plaintext: Buffer, _out: OutRequest): Immediate<OutResult & { iv?: Buffer; tag?: Buffer }> {
    throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
  }

  messageEncryptFinal(_session: Session): void {
    throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
  }

  messageDecryptInit(_session: Session, _mechanism: Mechanism, _keyHandle: number): Immediate<void> {
    throw new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, "C_MessageDecryptInit is not offered yet");
  }

  decryptMessage(_session: Session, _parameter: MessageParameter, _aad: Buffer, _ciphertext: Buffer, _out: OutRequest): Immediate<OutResult> {
    throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
  }

  messageDecryptFinal(_session: Session): void {
    throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
  }

  // ---- cancel ----------------------------------------------------------------------------------------------

  /** C_SessionCancel (v3.0): the flags name operations by their mechanism flag, plus CKF_FIND_OBJECTS. */
  cancel(session: Session, flags: number): void {
    if (flags & CKF.SIGN) session.sign = undefined;
    if (flags & CKF.VERIFY) session.verify = undefined;
    if (flags & CKF.ENCRYPT) session.encrypt = undefined;
    if (flags & CKF.DECRYPT) session.decrypt = undefined;
    if (flags & CKF.DIGEST) session.digest = undefined;
    if (flags & CKF.FIND_OBJECTS) session.find = undefined;
  }
}

/** An Init call names a key: a handle that names no object is CKR_KEY_HANDLE_INVALID there. */
function asKeyHandleError(error: unknown): unknown {
  return error instanceof Pkcs11Error && error.rv === CKR.OBJECT_HANDLE_INVALID ? new Pkcs11Error(CKR.KEY_HANDLE_INVALID, error.message, { logged: error.logged }) : error;
}

/** RSA signatures are exactly the modulus length (left-padded if the service dropped leading zeros); ECDSA r||s is fixed. */
function fitSignature(signature: Buffer, length: number, material: KeyMaterial): Buffer {
  if (signature.length === length) return signature;
  if (material.kind === "RSA" && signature.length < length) return Buffer.concat([Buffer.alloc(length - signature.length), signature]);
  log.error(`${material.key.name}: the vault returned a ${signature.length}-byte signature, expected ${length}`);
  throw new Pkcs11Error(CKR.DEVICE_ERROR, "signature of unexpected length");
}
