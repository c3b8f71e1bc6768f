// One session: its token, read/write flag and the operations active in it. The state transitions of each
// operation (what ends it, what keeps it) are in operations.ts; this file holds the state and the ordering.
import { CKF, CKS } from "../pkcs11/constants.ts";
import type { DecryptOperation, DigestOperation, EncryptOperation, SignOperation, VerifyOperation } from "../mechanisms/index.ts";
import type { KeyMaterial } from "../token/key-material.ts";
import type { Token } from "../token/token.ts";
import type { SecretMaterial } from "../token/secret-key.ts";
import type { SymmetricCipher } from "./symmetric.ts";
import { isPromise, type Immediate } from "./immediate.ts";

export interface ActiveSign {
  op: SignOperation;
  material: KeyMaterial;
  multiPart: boolean;
}

export interface ActiveVerify {
  op: VerifyOperation;
  multiPart: boolean;
}

export interface ActiveDecrypt {
  op: DecryptOperation;
  material: KeyMaterial;
  /** A plaintext that did not fit the caller's buffer, kept so that the retry does not call the vault again. */
  pending?: { ciphertext: Buffer; plaintext: Buffer };
}

export interface ActiveDigest {
  op: DigestOperation;
  multiPart: boolean;
}

export interface ActiveFind {
  handles: number[];
  position: number;
}

export class Session {
  closed = false;
  find: ActiveFind | undefined;
  sign: ActiveSign | undefined;
  verify: ActiveVerify | undefined;
  encrypt: EncryptOperation | SymmetricCipher | undefined;
  decrypt: ActiveDecrypt | SymmetricCipher | undefined;
  /** The v3.0 message operations: the key of an active C_MessageEncryptInit / C_MessageDecryptInit. */
  message: { encrypt?: SecretMaterial; decrypt?: SecretMaterial } = {};
  digest: ActiveDigest | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  /** Ordered calls of this session that are still waiting (for the vault, or for each other). */
  private waiting = 0;

  constructor(
    readonly handle: number,
    readonly token: Token,
    readonly readWrite: boolean,
  ) {}

  get state(): number {
    switch (this.token.loginState) {
      case "so":
        return CKS.RW_SO_FUNCTIONS;
      case "user":
        return this.readWrite ? CKS.RW_USER_FUNCTIONS : CKS.RO_USER_FUNCTIONS;
      case "public":
        return this.readWrite ? CKS.RW_PUBLIC_SESSION : CKS.RO_PUBLIC_SESSION;
    }
  }

  get flags(): number {
    return CKF.SERIAL_SESSION | (this.readWrite ? CKF.RW_SESSION : 0);
  }

  /**
   * Runs `task` after the session's earlier ordered calls have finished. Different sessions never wait for each
   * other; within one session, an Update cannot overtake its Init, nor a Final its Update.
   */
  serial<T>(task: () => Immediate<T>): Immediate<T> {
    // With nothing ahead of it the task runs now, and a task that needs nothing remote answers without a promise.
    const run = this.waiting === 0 ? task() : this.tail.then(task, task);
    if (!isPromise(run)) return run;
    this.waiting++;
    this.tail = run.then(
      () => void this.waiting--,
      () => void this.waiting--,
    );
    return run;
  }

  endAll(): void {
    this.find = undefined;
    this.sign = undefined;
    this.verify = undefined;
    this.encrypt = undefined;
    this.decrypt = undefined;
    this.digest = undefined;
    this.message = {};
  }
}
