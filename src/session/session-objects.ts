// Session objects: secret keys made with CKA_TOKEN false (C_GenerateKey, C_CreateObject, C_UnwrapKey). They live
// in this helper only, are visible to every session of the application on their token, and are destroyed with the
// session that made them, at C_Finalize, or when the helper dies (a replacement helper does not have them).
import { CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Attribute } from "../protocol/codec.ts";
import { SESSION_OBJECT_FIRST, SESSION_OBJECT_LAST, isSessionObjectHandle } from "../token/handles.ts";
import type { ObjectIdentity, TokenObject } from "../token/objects.ts";
import { secretKeyObject, type SecretMaterial } from "../token/secret-key.ts";
import type { FoundObject, Token } from "../token/token.ts";
import type { Immediate } from "./immediate.ts";
import type { Session } from "./session.ts";
import { allowedMechanisms } from "../mechanisms/table.ts";

/** Session keys one application may hold at once: a runaway loop gets CKR_DEVICE_MEMORY, not the helper's memory. */
const MAX_SESSION_OBJECTS = 100_000;

export interface SessionObject {
  object: TokenObject;
  secret: SecretMaterial;
  token: Token;
  /** The session that made it. */
  owner: number;
  identity: ObjectIdentity;
  isPrivate: boolean;
}

export interface NewSessionKey {
  secret: SecretMaterial;
  identity: ObjectIdentity;
  isPrivate: boolean;
  startDate?: Date;
  endDate?: Date;
}

export class SessionObjects {
  private readonly objects = new Map<number, SessionObject>();
  private next = SESSION_OBJECT_FIRST;

  constructor(private readonly ulongSize: number) {}

  static owns(handle: number): boolean {
    return isSessionObjectHandle(handle);
  }

  add(token: Token, owner: number, key: NewSessionKey): number {
    if (this.objects.size >= MAX_SESSION_OBJECTS || this.next > SESSION_OBJECT_LAST) {
      throw new Pkcs11Error(CKR.DEVICE_MEMORY, `this application holds ${this.objects.size} session keys: destroy some (C_DestroyObject) or close their sessions`);
    }
    const handle = this.next++;
    this.objects.set(handle, { object: this.build(handle, key), secret: key.secret, token, owner, identity: key.identity, isPrivate: key.isPrivate });
    return handle;
  }

  /** The object, seen from a session on `token`; session objects of other tokens do not exist there. */
  get(handle: number, token: Token): SessionObject {
    const found = this.objects.get(handle);
    if (!found || found.token !== token) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID);
    return found;
  }

  find(token: Token, template: readonly Attribute[]): number[] {
    const handles: number[] = [];
    for (const [handle, entry] of this.objects) if (entry.token === token && entry.object.attributes.matches(template)) handles.push(handle);
    return handles;
  }

  destroy(handle: number): void {
    this.objects.delete(handle);
  }

  setIdentity(handle: number, token: Token, change: Partial<ObjectIdentity>): void {
    const entry = this.get(handle, token);
    entry.identity = { ...entry.identity, ...change };
    entry.object = this.build(handle, { secret: entry.secret, identity: entry.identity, isPrivate: entry.isPrivate });
  }

  /** C_CloseSession: its objects go with it. */
  closeSession(session: number): void {
    for (const [handle, entry] of this.objects) if (entry.owner === session) this.objects.delete(handle);
  }

  clear(): void {
    this.objects.clear();
  }

  private build(handle: number, key: NewSessionKey): TokenObject {
    return secretKeyObject(
      key.secret,
      {
        handle,
        identity: key.identity,
        token: false,
        isPrivate: key.isPrivate,
        modifiable: true,
        destroyable: true,
        uniqueId: `session-object-${handle}`,
        allowedMechanisms: allowedMechanisms(key.secret, "secret"),
        ...(key.startDate ? { startDate: key.startDate } : {}),
        ...(key.endDate ? { endDate: key.endDate } : {}),
      },
      this.ulongSize,
    );
  }
}

/** A token object, or a session object of the session's token: what a handle names, seen from a session. */
export function findObject(sessionObjects: SessionObjects, session: Session, handle: number): Immediate<FoundObject> {
  if (SessionObjects.owns(handle)) {
    const { object, secret } = sessionObjects.get(handle, session.token);
    return { object, secret };
  }
  return session.token.object(handle);
}
