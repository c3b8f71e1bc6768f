// One entry per function of docs/protocol.md: how its request is decoded, what runs, and how its reply is
// encoded. Replies always have their full shape (zeros when rv is an error), so the shim decodes one shape per
// function. Adding a function means one entry here and the code it calls.
import { blankPadded, Reader, type OutRequest, type Writer } from "../protocol/codec.ts";
import { FunctionId, PROTOCOL_VERSION } from "../protocol/functions.ts";
import { CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { OutResult } from "../session/operations.ts";
import { andThen, type Immediate } from "../session/immediate.ts";
import type { Session } from "../session/session.ts";
import type { AttributeRequest } from "../token/attributes.ts";
import { CRYPTOKI_VERSION, LIBRARY_DESCRIPTION, LIBRARY_MANUFACTURER, LIBRARY_VERSION, TOKEN_MANUFACTURER, type Pkcs11Module, type RestoredLogin, type RestoredSession } from "./module.ts";

export interface Handler<A = unknown, R = unknown> {
  name: string;
  decode(reader: Reader): A;
  /** Returns a plain value when nothing had to wait: the reply then goes out within the read callback. */
  run(module: Pkcs11Module, args: A): Immediate<R>;
  /** `result` is undefined when run threw: write the zero shape. */
  encode(writer: Writer, result: R | undefined, args: A | undefined): void;
  /** A result may carry its own rv (CKR_BUFFER_TOO_SMALL, CKR_ATTRIBUTE_SENSITIVE ...). */
  rvOf?(result: R): number;
}

const nothing = (): void => undefined;

function define<A, R>(handler: Handler<A, R>): Handler {
  return handler as unknown as Handler;
}

// ---- shared shapes ---------------------------------------------------------------------------------------

interface ListResult {
  rv: number;
  count: number;
  items: number[];
}

function listReply(all: number[], out: OutRequest): ListResult {
  if (!out.present) return { rv: CKR.OK, count: all.length, items: [] };
  if (out.capacity < all.length) return { rv: CKR.BUFFER_TOO_SMALL, count: all.length, items: [] };
  return { rv: CKR.OK, count: all.length, items: all };
}

const encodeList = (writer: Writer, result: ListResult | undefined): void => void writer.ulongList(result?.count ?? 0, result?.items ?? []);

function encodeOut(writer: Writer, result: OutResult | undefined): void {
  writer.ulong(result?.length ?? 0).bytes(result?.rv === CKR.OK ? result.data : undefined);
}

/** Session-scoped handlers whose order matters run through the session's queue. */
function inSession<T>(module: Pkcs11Module, handle: number, task: (session: Session) => Immediate<T>): Immediate<T> {
  const session = module.session(handle);
  return session.serial(() => {
    if (session.closed) throw new Pkcs11Error(CKR.SESSION_CLOSED);
    return task(session);
  });
}

interface DataOut {
  session: number;
  data: Buffer;
  out: OutRequest;
}
const decodeDataOut = (r: Reader): DataOut => ({ session: r.ulong(), data: r.bytes(), out: r.out() });
const decodeSessionOut = (r: Reader): { session: number; out: OutRequest } => ({ session: r.ulong(), out: r.out() });
const decodeSessionData = (r: Reader): { session: number; data: Buffer } => ({ session: r.ulong(), data: r.bytes() });
const decodeSession = (r: Reader): { session: number } => ({ session: r.ulong() });
const decodeInit = (r: Reader) => ({ session: r.ulong(), mechanism: r.mechanism(), key: r.ulong() });
const outRv = (result: OutResult): number => result.rv;
const decodeMessage = (r: Reader) => ({ session: r.ulong(), parameter: r.messageParameter(), aad: r.bytes(), data: r.bytes(), out: r.out() });

// ---- the table -------------------------------------------------------------------------------------------

export const HANDLERS = new Map<number, Handler>([
  [
    FunctionId.C_Initialize,
    define({
      name: "C_Initialize",
      decode: (r) => {
        const version = r.u32();
        const ulongSize = r.u8();
        const flags = r.ulong();
        // Only a shim of this protocol version sends its call timeout; an older one gets the version error.
        const callTimeoutMs = version === PROTOCOL_VERSION ? r.ulong() : undefined;
        return { version, ulongSize, flags, callTimeoutMs };
      },
      run: (m, a) => m.initialize(a.version, a.ulongSize, a.callTimeoutMs),
      encode: nothing,
    }),
  ],
  [FunctionId.C_Finalize, define({ name: "C_Finalize", decode: () => ({}), run: (m) => m.finalize(), encode: nothing })],
  [
    FunctionId.C_GetInfo,
    define({
      name: "C_GetInfo",
      decode: () => ({}),
      run: (m) => Boolean(m.initialized),
      encode: (w, ok) => {
        w.version(ok ? CRYPTOKI_VERSION.major : 0, ok ? CRYPTOKI_VERSION.minor : 0)
          .fixed(blankPadded(ok ? LIBRARY_MANUFACTURER : "", 32), 32)
          .ulong(0)
          .fixed(blankPadded(ok ? LIBRARY_DESCRIPTION : "", 32), 32)
          .version(LIBRARY_VERSION.major, LIBRARY_VERSION.minor);
      },
    }),
  ],
  [
    FunctionId.C_GetSlotList,
    define({
      name: "C_GetSlotList",
      decode: (r) => ({ tokenPresent: r.u8(), out: r.out() }),
      run: (m, a) => listReply(m.slotIds(), a.out),
      encode: encodeList,
      rvOf: (result) => result.rv,
    }),
  ],
  [
    FunctionId.C_GetSlotInfo,
    define({
      name: "C_GetSlotInfo",
      decode: (r) => ({ slot: r.ulong() }),
      run: (m, a) => m.token(a.slot),
      encode: (w, token) => {
        w.fixed(blankPadded(token ? token.description : "", 64), 64)
          .fixed(blankPadded(token ? TOKEN_MANUFACTURER : "", 32), 32)
          .ulong(token ? 1 /* CKF_TOKEN_PRESENT */ : 0)
          .version(token ? 1 : 0, 0)
          .version(token ? 1 : 0, 0);
      },
    }),
  ],
  [
    FunctionId.C_GetTokenInfo,
    define({
      name: "C_GetTokenInfo",
      decode: (r) => ({ slot: r.ulong() }),
      run: (m, a) => m.tokenInfo(a.slot),
      encode: (w, info) => {
        const text = (value: string | undefined, size: number) => (value === undefined ? Buffer.alloc(size) : blankPadded(value, size));
        w.fixed(text(info?.label, 32), 32)
          .fixed(text(info?.manufacturer, 32), 32)
          .fixed(text(info?.model, 16), 16)
          .fixed(text(info?.serial, 16), 16)
          .ulong(info?.flags ?? 0)
          .ulong(info?.maxSessions ?? 0)
          .ulong(info?.sessions ?? 0)
          .ulong(info?.maxRwSessions ?? 0)
          .ulong(info?.rwSessions ?? 0)
          .ulong(info?.maxPin ?? 0)
          .ulong(info?.minPin ?? 0)
          .ulong(info?.totalPublic ?? 0)
          .ulong(info?.freePublic ?? 0)
          .ulong(info?.totalPrivate ?? 0)
          .ulong(info?.freePrivate ?? 0)
          .version(info ? 1 : 0, 0)
          .version(info ? 1 : 0, 0)
          // No clock on the token (CKF_CLOCK_ON_TOKEN unset): utcTime is blank.
          .fixed(info ? blankPadded("", 16) : Buffer.alloc(16), 16);
      },
    }),
  ],
  [
    FunctionId.C_GetMechanismList,
    define({
      name: "C_GetMechanismList",
      decode: (r) => ({ slot: r.ulong(), out: r.out() }),
      run: (m, a) => andThen(m.mechanismList(a.slot), (list) => listReply(list, a.out)),
      encode: encodeList,
      rvOf: (result) => result.rv,
    }),
  ],
  [
    FunctionId.C_GetMechanismInfo,
    define({
      name: "C_GetMechanismInfo",
      decode: (r) => ({ slot: r.ulong(), type: r.ulong() }),
      run: (m, a) => m.mechanismInfo(a.slot, a.type),
      encode: (w, info) => void w.ulong(info?.minKeySize ?? 0).ulong(info?.maxKeySize ?? 0).ulong(info?.flags ?? 0),
    }),
  ],
  [
    FunctionId.C_OpenSession,
    define({
      name: "C_OpenSession",
      decode: (r) => ({ slot: r.ulong(), flags: r.ulong() }),
      run: (m, a) => m.initialized.sessions.open(m.token(a.slot), a.flags).handle,
      encode: (w, handle) => void w.ulong(handle ?? 0),
    }),
  ],
  [
    FunctionId.C_CloseSession,
    define({ name: "C_CloseSession", decode: decodeSession, run: (m, a) => m.initialized.sessions.close(m.session(a.session)), encode: nothing }),
  ],
  [
    FunctionId.C_CloseAllSessions,
    define({ name: "C_CloseAllSessions", decode: (r) => ({ slot: r.ulong() }), run: (m, a) => m.initialized.sessions.closeAll(m.token(a.slot)), encode: nothing }),
  ],
  [
    FunctionId.C_GetSessionInfo,
    define({
      name: "C_GetSessionInfo",
      decode: decodeSession,
      run: (m, a) => m.session(a.session),
      encode: (w, s) => void w.ulong(s?.token.slotId ?? 0).ulong(s?.state ?? 0).ulong(s?.flags ?? 0).ulong(0),
    }),
  ],
  [
    FunctionId.C_Login,
    define({
      name: "C_Login",
      decode: (r) => ({ session: r.ulong(), userType: r.ulong(), pin: r.bytes() }),
      run: (m, a) => m.initialized.sessions.login(m.session(a.session), a.userType),
      encode: nothing,
    }),
  ],
  [
    FunctionId.C_LoginUser,
    define({
      name: "C_LoginUser",
      decode: (r) => ({ session: r.ulong(), userType: r.ulong(), pin: r.bytes(), username: r.bytes() }),
      run: (m, a) => m.initialized.sessions.login(m.session(a.session), a.userType),
      encode: nothing,
    }),
  ],
  [FunctionId.C_Logout, define({ name: "C_Logout", decode: decodeSession, run: (m, a) => m.initialized.sessions.logout(m.session(a.session)), encode: nothing })],
  [
    FunctionId.C_CreateObject,
    define({
      name: "C_CreateObject",
      decode: (r) => ({ session: r.ulong(), template: r.template() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.createObject(s, a.template)),
      encode: (w, handle) => void w.ulong(handle ?? 0),
    }),
  ],
  [
    FunctionId.C_DestroyObject,
    define({
      name: "C_DestroyObject",
      decode: (r) => ({ session: r.ulong(), object: r.ulong() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.destroyObject(s, a.object)),
      encode: nothing,
    }),
  ],
  [
    FunctionId.C_GetObjectSize,
    define({
      name: "C_GetObjectSize",
      decode: (r) => ({ session: r.ulong(), object: r.ulong() }),
      run: (m, a) => andThen(m.initialized.operations.object(m.session(a.session), a.object), (found) => found.object.attributes.size()),
      encode: (w, size) => void w.ulong(size ?? 0),
    }),
  ],
  [
    FunctionId.C_GetAttributeValue,
    define({
      name: "C_GetAttributeValue",
      decode: (r) => {
        const session = r.ulong();
        const object = r.ulong();
        const count = r.u32();
        const requests: AttributeRequest[] = [];
        for (let i = 0; i < count; i++) {
          const type = r.ulong();
          const out = r.out();
          requests.push({ type, present: out.present, capacity: out.capacity });
        }
        return { session, object, requests };
      },
      run: (m, a) => andThen(m.initialized.operations.object(m.session(a.session), a.object), (found) => found.object.attributes.read(a.requests)),
      encode: (w, result, args) => {
        const count = args?.requests.length ?? 0;
        w.u32(count);
        for (let i = 0; i < count; i++) {
          const answer = result?.answers[i];
          w.ulong(answer?.length ?? 0).bytes(answer?.value);
        }
      },
      rvOf: (result) => result.rv,
    }),
  ],
  [
    FunctionId.C_SetAttributeValue,
    define({
      name: "C_SetAttributeValue",
      decode: (r) => ({ session: r.ulong(), object: r.ulong(), template: r.template() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.setAttributeValue(s, a.object, a.template)),
      encode: nothing,
    }),
  ],
  [
    FunctionId.C_FindObjectsInit,
    define({
      name: "C_FindObjectsInit",
      decode: (r) => ({ session: r.ulong(), template: r.template() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.findInit(s, a.template)),
      encode: nothing,
    }),
  ],
  [
    FunctionId.C_FindObjects,
    define({
      name: "C_FindObjects",
      decode: (r) => ({ session: r.ulong(), maxCount: r.ulong() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.find(s, a.maxCount)),
      encode: (w, handles) => {
        w.u32(handles?.length ?? 0);
        for (const handle of handles ?? []) w.ulong(handle);
      },
    }),
  ],
  [
    FunctionId.C_FindObjectsFinal,
    define({ name: "C_FindObjectsFinal", decode: decodeSession, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.findFinal(s)), encode: nothing }),
  ],
  [FunctionId.C_EncryptInit, define({ name: "C_EncryptInit", decode: decodeInit, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.encryptInit(s, a.mechanism, a.key)), encode: nothing })],
  [FunctionId.C_Encrypt, define({ name: "C_Encrypt", decode: decodeDataOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.encrypt(s, a.data, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_EncryptUpdate, define({ name: "C_EncryptUpdate", decode: decodeDataOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.encryptUpdate(s, a.data)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_EncryptFinal, define({ name: "C_EncryptFinal", decode: decodeSessionOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.encryptFinal(s, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_DecryptInit, define({ name: "C_DecryptInit", decode: decodeInit, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.decryptInit(s, a.mechanism, a.key)), encode: nothing })],
  [FunctionId.C_Decrypt, define({ name: "C_Decrypt", decode: decodeDataOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.decrypt(s, a.data, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_DecryptUpdate, define({ name: "C_DecryptUpdate", decode: decodeDataOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.decryptUpdate(s, a.data)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_DecryptFinal, define({ name: "C_DecryptFinal", decode: decodeSessionOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.decryptFinal(s, a.out)), encode: encodeOut, rvOf: outRv })],
  [
    FunctionId.C_DigestInit,
    define({ name: "C_DigestInit", decode: (r) => ({ session: r.ulong(), mechanism: r.mechanism() }), run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.digestInit(s, a.mechanism)), encode: nothing }),
  ],
  [FunctionId.C_Digest, define({ name: "C_Digest", decode: decodeDataOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.digest(s, a.data, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_DigestUpdate, define({ name: "C_DigestUpdate", decode: decodeSessionData, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.digestUpdate(s, a.data)), encode: nothing })],
  [FunctionId.C_DigestKey, define({ name: "C_DigestKey", decode: (r) => ({ session: r.ulong(), key: r.ulong() }), run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.digestKey(s)), encode: nothing })],
  [FunctionId.C_DigestFinal, define({ name: "C_DigestFinal", decode: decodeSessionOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.digest(s, undefined, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_SignInit, define({ name: "C_SignInit", decode: decodeInit, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.signInit(s, a.mechanism, a.key)), encode: nothing })],
  [FunctionId.C_Sign, define({ name: "C_Sign", decode: decodeDataOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.sign(s, a.data, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_SignUpdate, define({ name: "C_SignUpdate", decode: decodeSessionData, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.signUpdate(s, a.data)), encode: nothing })],
  [FunctionId.C_SignFinal, define({ name: "C_SignFinal", decode: decodeSessionOut, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.sign(s, undefined, a.out)), encode: encodeOut, rvOf: outRv })],
  [FunctionId.C_VerifyInit, define({ name: "C_VerifyInit", decode: decodeInit, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.verifyInit(s, a.mechanism, a.key)), encode: nothing })],
  [
    FunctionId.C_Verify,
    define({
      name: "C_Verify",
      decode: (r) => ({ session: r.ulong(), data: r.bytes(), signature: r.bytes() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.verify(s, a.data, a.signature)),
      encode: nothing,
    }),
  ],
  [FunctionId.C_VerifyUpdate, define({ name: "C_VerifyUpdate", decode: decodeSessionData, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.verifyUpdate(s, a.data)), encode: nothing })],
  [
    FunctionId.C_VerifyFinal,
    define({
      name: "C_VerifyFinal",
      decode: (r) => ({ session: r.ulong(), signature: r.bytes() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.verify(s, undefined, a.signature)),
      encode: nothing,
    }),
  ],
  [
    FunctionId.C_SeedRandom,
    define({
      name: "C_SeedRandom",
      // The shim sends only the seed's length: every seed is refused.
      decode: (r) => ({ session: r.ulong(), length: r.ulong() }),
      run: (m, a) => {
        m.session(a.session);
        throw new Pkcs11Error(CKR.RANDOM_SEED_NOT_SUPPORTED);
      },
      encode: nothing,
    }),
  ],
  [
    FunctionId.C_GenerateRandom,
    define({
      name: "C_GenerateRandom",
      decode: (r) => ({ session: r.ulong(), length: r.ulong() }),
      run: (m, a) => m.generateRandom(m.session(a.session), a.length),
      encode: (w, bytes) => void w.bytes(bytes),
    }),
  ],
  [
    FunctionId.C_GenerateKey,
    define({
      name: "C_GenerateKey",
      decode: (r) => ({ session: r.ulong(), mechanism: r.mechanism(), template: r.template() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.generateKey(s, a.mechanism, a.template)),
      encode: (w, handle) => void w.ulong(handle ?? 0),
    }),
  ],
  [
    FunctionId.C_GenerateKeyPair,
    define({
      name: "C_GenerateKeyPair",
      decode: (r) => ({ session: r.ulong(), mechanism: r.mechanism(), publicTemplate: r.template(), privateTemplate: r.template() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.generateKeyPair(s, a.mechanism, a.publicTemplate, a.privateTemplate)),
      encode: (w, pair) => void w.ulong(pair?.publicHandle ?? 0).ulong(pair?.privateHandle ?? 0),
    }),
  ],
  [
    FunctionId.C_WrapKey,
    define({
      name: "C_WrapKey",
      decode: (r) => ({ session: r.ulong(), mechanism: r.mechanism(), wrappingKey: r.ulong(), key: r.ulong(), out: r.out() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.wrapKey(s, a.mechanism, a.wrappingKey, a.key, a.out)),
      encode: encodeOut,
      rvOf: outRv,
    }),
  ],
  [
    FunctionId.C_UnwrapKey,
    define({
      name: "C_UnwrapKey",
      decode: (r) => ({ session: r.ulong(), mechanism: r.mechanism(), unwrappingKey: r.ulong(), wrapped: r.bytes(), template: r.template() }),
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.keys.unwrapKey(s, a.mechanism, a.unwrappingKey, a.wrapped, a.template)),
      encode: (w, handle) => void w.ulong(handle ?? 0),
    }),
  ],
  [
    FunctionId.C_MessageEncryptInit,
    define({ name: "C_MessageEncryptInit", decode: decodeInit, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.messageEncryptInit(s, a.mechanism, a.key)), encode: nothing }),
  ],
  [
    FunctionId.C_EncryptMessage,
    define({
      name: "C_EncryptMessage",
      decode: decodeMessage,
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.encryptMessage(s, a.parameter, a.aad, a.data, a.out)),
      // The IV and tag travel only with the ciphertext: the shim writes them back only then, and checks their lengths.
      encode: (w, result: (OutResult & { iv?: Buffer; tag?: Buffer }) | undefined, args) => {
        const produced = result?.rv === CKR.OK && args?.out.present === true;
        w.bytes(produced ? result.iv : undefined).bytes(produced ? result.tag : undefined);
        encodeOut(w, result);
      },
      rvOf: outRv,
    }),
  ],
  [
    FunctionId.C_MessageEncryptFinal,
    define({ name: "C_MessageEncryptFinal", decode: decodeSession, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.messageEncryptFinal(s)), encode: nothing }),
  ],
  [
    FunctionId.C_MessageDecryptInit,
    define({ name: "C_MessageDecryptInit", decode: decodeInit, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.messageDecryptInit(s, a.mechanism, a.key)), encode: nothing }),
  ],
  [
    FunctionId.C_DecryptMessage,
    define({
      name: "C_DecryptMessage",
      decode: decodeMessage,
      run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.decryptMessage(s, a.parameter, a.aad, a.data, a.out)),
      encode: encodeOut,
      rvOf: outRv,
    }),
  ],
  [
    FunctionId.C_MessageDecryptFinal,
    define({ name: "C_MessageDecryptFinal", decode: decodeSession, run: (m, a) => inSession(m, a.session, (s) => m.initialized.operations.messageDecryptFinal(s)), encode: nothing }),
  ],
  [
    FunctionId.C_SessionCancel,
    define({ name: "C_SessionCancel", decode: (r) => ({ session: r.ulong(), flags: r.ulong() }), run: (m, a) => m.initialized.operations.cancel(m.session(a.session), a.flags), encode: nothing }),
  ],
  [
    FunctionId.RestoreSessions,
    define({
      name: "RestoreSessions",
      decode: (r) => {
        const highestHandle = r.ulong();
        const sessions: RestoredSession[] = [];
        // Each entry is at least 24 bytes, so a bogus count runs out of payload (ProtocolError) long before memory.
        for (let n = r.u32(); n > 0; n--) sessions.push({ handle: r.ulong(), slot: r.ulong(), flags: r.ulong() });
        const logins: RestoredLogin[] = [];
        for (let n = r.u32(); n > 0; n--) logins.push({ slot: r.ulong(), userType: r.ulong() });
        return { highestHandle, sessions, logins };
      },
      run: (m, a) => m.restoreSessions(a.highestHandle, a.sessions, a.logins),
      encode: nothing,
    }),
  ],
]);
