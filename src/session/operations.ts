// The operation calls of a session: find, sign, verify, encrypt, decrypt, digest. Each follows the spec's rules
// for what ends an operation: a length query or CKR_BUFFER_TOO_SMALL keeps it (and never calls the vault), any
// other outcome of the finishing call ends it, errors included.
import type { Attribute, Mechanism, MessageParameter, OutRequest } from "../protocol/codec.ts";
import type { VaultBackend } from "../vault/types.ts";
import { CKF, CKM, CKR, mechanismName, rvName } from "../pkcs11/constants.ts";
import { aesParameters, HSM_GCM_IV_BYTES, HSM_GCM_TAG_BYTES, localAes, messageParameters, usableSecret, vaultAesAlgorithm } from "../mechanisms/aes.ts";
import type { SecretMaterial } from "../token/secret-key.ts";
import { findObject, type SessionObjects } from "./session-objects.ts";
import { SymmetricCipher } from "./symmetric.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { startDecrypt, startDigestOperation, startEncrypt, startSign, startVerify, type VaultSignRequest } from "../mechanisms/index.ts";
import type { KeyMaterial } from "../token/key-material.ts";
import type { FoundObject } from "../token/token.ts";
import { vaultFailure } from "../token/vault-errors.ts";
import { andThen, type Immediate } from "./immediate.ts";
import type { ActiveDecrypt, ActiveSign, Session } from "./session.ts";
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
    private readonly sessionObjects: SessionObjects,
  ) {}

  // ---- objects ---------------------------------------------------------------------------------------------

  /** A token object, or a session object of the session's token. */
  object(session: Session, handle: number): Immediate<FoundObject> {
    return findObject(this.sessionObjects, session, handle);
  }

  findInit(session: Session, template: Attribute[]): Immediate<void> {
    if (session.find) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    // A find that can match a certificate still pending after a passing failure waits for its fetch (key-token.ts).
    return andThen(session.token.find(template), (handles) => {
      session.find = { handles: [...handles, ...this.sessionObjects.find(session.token, template)], position: 0 };
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
    return andThen(this.keyObject(session, handle), (found) => this.checkedKey(session, found, side, permitted, purpose));
  }

  /** The object behind an Init call's key handle; a handle that names no object is CKR_KEY_HANDLE_INVALID. */
  private keyObject(session: Session, handle: number): Immediate<FoundObject> {
    let found: Immediate<FoundObject>;
    try {
      found = this.object(session, handle);
    } catch (error) {
      throw asKeyHandleError(error);
    }
    return found instanceof Promise ? found.catch((error: unknown) => Promise.reject(asKeyHandleError(error))) : found;
  }

  /** The secret key of an AES operation, with its usage checked. */
  private secretKey(session: Session, handle: number, flag: "encrypt" | "decrypt", purpose: string): Immediate<SecretMaterial> {
    return andThen(this.keyObject(session, handle), ({ object, secret }) => {
      if (!secret) throw new Pkcs11Error(CKR.KEY_TYPE_INCONSISTENT, `${purpose} with an AES mechanism needs a secret key; object ${object.handle} is a ${object.kind} ${object.kind === "certificate" || object.kind === "authority" ? "certificate" : "key"}`);
      usableSecret(secret, flag, session.token.label);
      return secret;
    });
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

  // ---- encrypt: RSA locally with the public key; AES in the HSM or with a session key -----------------------

  encryptInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    if (session.encrypt) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    if (isAes(mechanism)) {
      const params = aesParameters(mechanism);
      return andThen(this.secretKey(session, keyHandle, "encrypt", "encryption"), (secret) => {
        session.encrypt = new SymmetricCipher("encrypt", params, secret, this.backend, session.token.label);
      });
    }
    return andThen(this.key(session, keyHandle, "public", (m) => m.can.encrypt && m.kind === "RSA", "encryption"), (material) => {
      session.encrypt = startEncrypt(mechanism, material, this.ulongSize);
    });
  }

  encrypt(session: Session, data: Buffer, out: OutRequest): Immediate<OutResult> {
    const op = session.encrypt;
    if (!op) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    if (op instanceof SymmetricCipher) {
      if (op.multiPart) {
        session.encrypt = undefined;
        throw new Pkcs11Error(CKR.OPERATION_ACTIVE, "C_Encrypt cannot finish a multi-part encryption: call C_EncryptFinal");
      }
      return this.finishSymmetric(session, op, op.input(data), out);
    }
    const sized = sizeOnly(out, op.outputLength);
    if (sized) return sized;
    session.encrypt = undefined;
    const ciphertext = op.encrypt(data);
    return { rv: CKR.OK, length: ciphertext.length, data: ciphertext };
  }

  /** AES gathers the parts; RSA encryption is single-part, so its Update ends the operation with an error. */
  encryptUpdate(session: Session, data: Buffer): OutResult {
    return this.gather(session, this.multiPartCipher(session, "encrypt"), data);
  }

  encryptFinal(session: Session, out: OutRequest): Immediate<OutResult> {
    const op = this.multiPartCipher(session, "encrypt");
    return this.finishSymmetric(session, op, op.input(), out);
  }

  // ---- decrypt: RSA in the vault; AES in the HSM or with a session key --------------------------------------

  decryptInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    if (session.decrypt) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    if (isAes(mechanism)) {
      const params = aesParameters(mechanism);
      return andThen(this.secretKey(session, keyHandle, "decrypt", "decryption"), (secret) => {
        session.decrypt = new SymmetricCipher("decrypt", params, secret, this.backend, session.token.label);
      });
    }
    return andThen(this.key(session, keyHandle, "private", (m) => m.can.decrypt && m.kind === "RSA", "decryption"), (material) => {
      session.decrypt = { op: startDecrypt(mechanism, material, this.ulongSize), material };
    });
  }

  decrypt(session: Session, ciphertext: Buffer, out: OutRequest): Immediate<OutResult> {
    const active = session.decrypt;
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    if (active instanceof SymmetricCipher) {
      if (active.multiPart) {
        session.decrypt = undefined;
        throw new Pkcs11Error(CKR.OPERATION_ACTIVE, "C_Decrypt cannot finish a multi-part decryption: call C_DecryptFinal");
      }
      return this.finishSymmetric(session, active, active.input(ciphertext), out);
    }
    return this.decryptRsa(session, active, ciphertext, out);
  }

  private async decryptRsa(session: Session, active: ActiveDecrypt, ciphertext: Buffer, out: OutRequest): Promise<OutResult> {
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

  decryptUpdate(session: Session, data: Buffer): OutResult {
    return this.gather(session, this.multiPartCipher(session, "decrypt"), data);
  }

  decryptFinal(session: Session, out: OutRequest): Immediate<OutResult> {
    const op = this.multiPartCipher(session, "decrypt");
    return this.finishSymmetric(session, op, op.input(), out);
  }

  /** The active AES operation of an Update or Final call; an RSA one is single-part and ends with an error. */
  private multiPartCipher(session: Session, direction: "encrypt" | "decrypt"): SymmetricCipher {
    const active = session[direction];
    if (!active) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    if (active instanceof SymmetricCipher) return active;
    session[direction] = undefined;
    throw new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, `RSA ${direction}ion is single-part: use C_${direction === "encrypt" ? "Encrypt" : "Decrypt"}`);
  }

  private gather(session: Session, op: SymmetricCipher, data: Buffer): OutResult {
    try {
      op.update(data);
    } catch (error) {
      session[op.direction] = undefined;
      throw error;
    }
    return { rv: CKR.OK, length: 0, data: Buffer.alloc(0) };
  }

  /**
   * The finishing call of an AES operation: a length query or a buffer too small keeps the operation (and the
   * output already computed, so that the retry does not ask the HSM again); anything else ends it.
   */
  private finishSymmetric(session: Session, op: SymmetricCipher, input: Buffer, out: OutRequest): Immediate<OutResult> {
    const end = (): void => {
      session[op.direction] = undefined;
    };
    const bound = op.outputLength(input);
    if (!out.present) return { rv: CKR.OK, length: bound };
    // An exact length that does not fit needs no work; CBC_PAD decryption's bound may shrink, so it runs first.
    const exact = !(op.direction === "decrypt" && op.params.mode === "cbc-pad");
    if (exact && out.capacity < bound) return { rv: CKR.BUFFER_TOO_SMALL, length: bound };
    let output: Immediate<Buffer>;
    try {
      output = op.run(input);
    } catch (error) {
      end();
      throw error;
    }
    const settle = (result: Buffer): OutResult => {
      if (out.capacity < result.length) {
        op.keep(input, result);
        return { rv: CKR.BUFFER_TOO_SMALL, length: result.length };
      }
      end();
      return { rv: CKR.OK, length: result.length, data: result };
    };
    return output instanceof Promise ? output.then(settle, (error: unknown) => {
      end();
      throw error;
    }) : settle(output);
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

  // ---- message-based encryption (v3.0): AES-GCM, where Managed HSM chooses the IV --------------------------

  messageEncryptInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    return this.messageInit(session, mechanism, keyHandle, "encrypt");
  }

  messageDecryptInit(session: Session, mechanism: Mechanism, keyHandle: number): Immediate<void> {
    return this.messageInit(session, mechanism, keyHandle, "decrypt");
  }

  private messageInit(session: Session, mechanism: Mechanism, keyHandle: number, direction: "encrypt" | "decrypt"): Immediate<void> {
    if (session.message[direction]) throw new Pkcs11Error(CKR.OPERATION_ACTIVE);
    if (mechanism.type !== CKM.AES_GCM) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${mechanismName(mechanism.type)}: messages are encrypted with CKM_AES_GCM only`);
    if (mechanism.parameter.kind !== "none") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, "CKM_AES_GCM for messages takes its parameters per message (CK_GCM_MESSAGE_PARAMS), not at Init");
    return andThen(this.secretKey(session, keyHandle, direction, `message ${direction}ion`), (secret) => {
      session.message[direction] = secret;
    });
  }

  /** On CKR_OK with output, `iv` and `tag` are what the shim writes back into CK_GCM_MESSAGE_PARAMS. */
  encryptMessage(session: Session, parameter: MessageParameter, aad: Buffer, plaintext: Buffer, out: OutRequest): Immediate<OutResult & { iv?: Buffer; tag?: Buffer }> {
    const secret = session.message.encrypt;
    if (!secret) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    const params = messageParameters(parameter, "encrypt", Boolean(secret.key));
    // GCM's ciphertext is as long as the plaintext; the tag travels in the parameter.
    const sized = sizeOnly(out, plaintext.length);
    if (sized) return sized;
    const length = secret.length!;
    if (secret.value) {
      const sealed = localAes({ mode: "gcm", iv: params.iv, aad, tagBytes: params.tagBytes }, "encrypt", secret.value, plaintext);
      return { rv: CKR.OK, length: plaintext.length, data: sealed.subarray(0, plaintext.length), iv: params.iv, tag: sealed.subarray(plaintext.length) };
    }
    return this.backend.encryptAes(secret.key!, vaultAesAlgorithm("gcm", length), plaintext, { aad }).then(
      ({ ciphertext, iv, tag }) => {
        if (ciphertext.length !== plaintext.length || iv?.length !== HSM_GCM_IV_BYTES || tag?.length !== HSM_GCM_TAG_BYTES) {
          throw new Pkcs11Error(CKR.DEVICE_ERROR, `${session.token.label}: the HSM's GCM answer has a ${ciphertext.length}-byte ciphertext, a ${iv?.length ?? 0}-byte IV and a ${tag?.length ?? 0}-byte tag`);
        }
        return { rv: CKR.OK, length: ciphertext.length, data: ciphertext, iv, tag };
      },
      (error: unknown) => Promise.reject(vaultFailure(error, session.token.label, "encrypt")),
    );
  }

  decryptMessage(session: Session, parameter: MessageParameter, aad: Buffer, ciphertext: Buffer, out: OutRequest): Immediate<OutResult> {
    const secret = session.message.decrypt;
    if (!secret) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    const params = messageParameters(parameter, "decrypt", Boolean(secret.key));
    const sized = sizeOnly(out, ciphertext.length);
    if (sized) return sized;
    if (secret.value) {
      const plaintext = localAes({ mode: "gcm", iv: params.iv, aad, tagBytes: params.tagBytes }, "decrypt", secret.value, Buffer.concat([ciphertext, params.tag]));
      return { rv: CKR.OK, length: plaintext.length, data: plaintext };
    }
    return this.backend.decryptAes(secret.key!, vaultAesAlgorithm("gcm", secret.length!), ciphertext, { iv: params.iv, aad, tag: params.tag }).then(
      (plaintext) => ({ rv: CKR.OK, length: plaintext.length, data: plaintext }),
      (error: unknown) => Promise.reject(vaultFailure(error, session.token.label, "decrypt")),
    );
  }

  messageEncryptFinal(session: Session): void {
    if (!session.message.encrypt) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.message.encrypt = undefined;
  }

  messageDecryptFinal(session: Session): void {
    if (!session.message.decrypt) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED);
    session.message.decrypt = undefined;
  }

  // ---- cancel ----------------------------------------------------------------------------------------------

  /** C_SessionCancel (v3.0): the flags name operations by their mechanism flag, plus CKF_FIND_OBJECTS. */
  cancel(session: Session, flags: number): void {
    if (flags & CKF.SIGN) session.sign = undefined;
    if (flags & CKF.VERIFY) session.verify = undefined;
    if (flags & CKF.ENCRYPT) session.encrypt = undefined;
    if (flags & CKF.DECRYPT) session.decrypt = undefined;
    if (flags & CKF.MESSAGE_ENCRYPT) session.message.encrypt = undefined;
    if (flags & CKF.MESSAGE_DECRYPT) session.message.decrypt = undefined;
    if (flags & CKF.DIGEST) session.digest = undefined;
    if (flags & CKF.FIND_OBJECTS) session.find = undefined;
  }
}

const isAes = (mechanism: Mechanism): boolean => mechanism.type === CKM.AES_CBC || mechanism.type === CKM.AES_CBC_PAD || mechanism.type === CKM.AES_GCM;

/** An Init call names a key: a handle that names no object is CKR_KEY_HANDLE_INVALID there. */
function asKeyHandleError(error: unknown): unknown {
  return error instanceof Pkcs11Error && error.rv === CKR.OBJECT_HANDLE_INVALID ? handleError(error, CKR.KEY_HANDLE_INVALID) : error;
}

/** The same refusal under the code of the argument it is about (CKR_KEY_HANDLE_INVALID, CKR_WRAPPING_KEY_HANDLE_INVALID ...). */
export function handleError(error: Pkcs11Error, rv: number): Pkcs11Error {
  const message = error.message === rvName(error.rv) ? "no object on this token has that handle" : error.message;
  return new Pkcs11Error(rv, message, { logged: error.logged });
}

/** RSA signatures are exactly the modulus length (left-padded if the service dropped leading zeros); ECDSA r||s is fixed. */
function fitSignature(signature: Buffer, length: number, material: KeyMaterial): Buffer {
  if (signature.length === length) return signature;
  if (material.kind === "RSA" && signature.length < length) return Buffer.concat([Buffer.alloc(length - signature.length), signature]);
  log.error(`${material.key.name}: the vault returned a ${signature.length}-byte signature, expected ${length}`);
  throw new Pkcs11Error(CKR.DEVICE_ERROR, "signature of unexpected length");
}
