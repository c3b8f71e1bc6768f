// Opening, closing and finding sessions, and the login rules of PKCS#11 v2.40 §5.6 (login state is per token and
// shared by all of its sessions). Any PIN is accepted: the vault authenticates the Azure identity, not a PIN.
import { CKF, CKR, CKU } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Token } from "../token/token.ts";
import { Session } from "./session.ts";

export class SessionTable {
  private readonly sessions = new Map<number, Session>();

  /** `closed` runs for every session that C_CloseSession or C_CloseAllSessions ends (its session objects go). */
  constructor(private readonly closed: (handle: number) => void = () => undefined) {}
  // Handles are never reused within a helper's lifetime, so a stale handle can never reach another session.
  private nextHandle = 1;

  get(handle: number): Session {
    const session = this.sessions.get(handle);
    if (!session) throw new Pkcs11Error(CKR.SESSION_HANDLE_INVALID);
    return session;
  }

  /** No handle up to `handle` is handed out any more (src/helper/module.ts restoreSessions). */
  skipPast(handle: number): void {
    if (Number.isSafeInteger(handle)) this.nextHandle = Math.max(this.nextHandle, handle + 1);
  }

  has(handle: number): boolean {
    return this.sessions.has(handle);
  }

  open(token: Token, flags: number): Session {
    if ((flags & CKF.SERIAL_SESSION) === 0) throw new Pkcs11Error(CKR.SESSION_PARALLEL_NOT_SUPPORTED);
    const readWrite = (flags & CKF.RW_SESSION) !== 0;
    if (!readWrite && token.loginState === "so") throw new Pkcs11Error(CKR.SESSION_READ_WRITE_SO_EXISTS);
    const session = new Session(this.nextHandle++, token, readWrite);
    this.sessions.set(session.handle, session);
    token.sessions.add(session.handle);
    return session;
  }

  /** A session of a helper that died, under its old handle (src/helper/module.ts restoreSessions). */
  restore(handle: number, token: Token, flags: number): Session {
    if (this.sessions.has(handle)) throw new Pkcs11Error(CKR.ARGUMENTS_BAD, `session ${handle} is restored twice`);
    const session = new Session(handle, token, (flags & CKF.RW_SESSION) !== 0);
    this.sessions.set(handle, session);
    token.sessions.add(handle);
    // Handles stay unique across helpers too: new sessions are numbered after every restored one.
    this.nextHandle = Math.max(this.nextHandle, handle + 1);
    return session;
  }

  close(session: Session): void {
    session.closed = true;
    session.endAll();
    this.sessions.delete(session.handle);
    this.closed(session.handle);
    const { token } = session;
    token.sessions.delete(session.handle);
    // Closing the token's last session logs the user out (v2.40 §5.6, C_CloseSession).
    if (token.sessions.size === 0) token.loginState = "public";
  }

  closeAll(token: Token): void {
    for (const handle of [...token.sessions]) {
      const session = this.sessions.get(handle);
      if (session) this.close(session);
    }
    token.loginState = "public";
  }

  /** Counts for C_GetTokenInfo. */
  counts(token: Token): { all: number; readWrite: number } {
    let readWrite = 0;
    for (const handle of token.sessions) if (this.sessions.get(handle)?.readWrite) readWrite++;
    return { all: token.sessions.size, readWrite };
  }

  login(session: Session, userType: number): void {
    const { token } = session;
    switch (userType) {
      case CKU.CONTEXT_SPECIFIC:
        // No key has CKA_ALWAYS_AUTHENTICATE, but a re-authentication for an active operation is harmless.
        if (token.loginState === "public") throw new Pkcs11Error(CKR.USER_NOT_LOGGED_IN);
        if (!session.sign && !session.decrypt) throw new Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED, "context-specific login without an active signing or decryption operation");
        return;
      case CKU.SO:
        if (token.loginState === "so") throw new Pkcs11Error(CKR.USER_ALREADY_LOGGED_IN);
        if (token.loginState === "user") throw new Pkcs11Error(CKR.USER_ANOTHER_ALREADY_LOGGED_IN);
        for (const handle of token.sessions) {
          if (!this.sessions.get(handle)?.readWrite) throw new Pkcs11Error(CKR.SESSION_READ_ONLY_EXISTS);
        }
        token.loginState = "so";
        return;
      case CKU.USER:
        if (token.loginState === "user") throw new Pkcs11Error(CKR.USER_ALREADY_LOGGED_IN);
        if (token.loginState === "so") throw new Pkcs11Error(CKR.USER_ANOTHER_ALREADY_LOGGED_IN);
        token.loginState = "user";
        return;
      default:
        throw new Pkcs11Error(CKR.USER_TYPE_INVALID);
    }
  }

  logout(session: Session): void {
    if (session.token.loginState === "public") throw new Pkcs11Error(CKR.USER_NOT_LOGGED_IN);
    session.token.loginState = "public";
  }

  /** Everything, for C_Finalize. */
  clear(): void {
    for (const session of this.sessions.values()) {
      session.closed = true;
      session.endAll();
      session.token.sessions.clear();
      session.token.loginState = "public";
    }
    this.sessions.clear();
  }
}
