// C_FindObjects templates on any attribute, and the find operation's state rules.
import test from "ava";
import { createHash } from "node:crypto";
import pkcs11js from "pkcs11js";
import { findObjects, openSession, rvOf, startModuleFixture, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa:RSA:2048,ec:EC:P-256", certs: ["rsa"] });
});
test.after.always(() => fixture?.close());

const handles = (list: Buffer[]): number[] => list.map((handle) => Number(handle.readBigUInt64LE())).sort((a, b) => a - b);

test("templates match on class, id, label, key type, booleans and combinations", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa");
  const id = createHash("sha1").update(fixture.key("rsa").publicKey.export({ type: "pkcs1", format: "der" })).digest();
  t.deepEqual(handles(findObjects(pkcs11, session, [])), [1, 2, 3]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])), [1]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }])), [2]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }])), [3]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_ID, value: id }])), [1, 2, 3]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_LABEL, value: "rsa" }])), [1, 2, 3]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_LABEL, value: "ec" }])), []);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA }])), [1, 2]);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_SIGN, value: true }])), [1]);
  t.deepEqual(
    handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }, { type: pkcs11js.CKA_ID, value: id }, { type: pkcs11js.CKA_VERIFY, value: true }])),
    [2],
  );
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_ID, value: Buffer.from("nope") }])), []);
  // Unknown attributes and sensitive ones match nothing.
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: 0x7fff0001, value: Buffer.from([1]) }])), []);
  t.deepEqual(handles(findObjects(pkcs11, session, [{ type: pkcs11js.CKA_PRIVATE_EXPONENT, value: Buffer.from([1]) }])), []);
  pkcs11.C_CloseSession(session);
});

test("each token's session sees only its own objects", (t) => {
  const session = openSession(fixture, "ec");
  t.deepEqual(handles(findObjects(fixture.pkcs11, session, [])), [17, 18]);
  fixture.pkcs11.C_CloseSession(session);
});

test("results come in chunks; init twice, find and final without init are refused", (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "rsa");
  t.is(rvOf(() => pkcs11.C_FindObjects(session, 1)), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  t.is(rvOf(() => pkcs11.C_FindObjectsFinal(session)), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  pkcs11.C_FindObjectsInit(session, []);
  t.is(rvOf(() => pkcs11.C_FindObjectsInit(session, [])), pkcs11js.CKR_OPERATION_ACTIVE);
  const seen = [...pkcs11.C_FindObjects(session, 1), ...pkcs11.C_FindObjects(session, 1), ...pkcs11.C_FindObjects(session, 5)];
  t.deepEqual(handles(seen), [1, 2, 3]);
  t.is(pkcs11.C_FindObjects(session, 5).length, 0);
  pkcs11.C_FindObjectsFinal(session);
  pkcs11.C_CloseSession(session);
});
