// Slots, tokens, sessions and login: the spec's state rules, blank-padded strings, handles never reused.
import test from "ava";
import pkcs11js from "pkcs11js";
import { openSession, rvOf, startModuleFixture, type ModuleFixture } from "./harness.ts";

// Session states (pkcs11js does not export them).
const CKF_TOKEN_PRESENT = 1;
const CKS = { RO_PUBLIC_SESSION: 0, RO_USER_FUNCTIONS: 1, RW_PUBLIC_SESSION: 2, RW_USER_FUNCTIONS: 3, RW_SO_FUNCTIONS: 4 };

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "a-signing-key-whose-name-is-longer-than-32-characters:EC:P-256,b:EC:P-256" });
});
test.after.always(() => fixture?.close());

const longName = "a-signing-key-whose-name-is-longer-than-32-characters";

test("library, slot and token information is blank-padded and flags fit a PIN-less cloud token", (t) => {
  const { pkcs11 } = fixture;
  const info = pkcs11.C_GetInfo();
  t.regex(info.manufacturerID, /^azure-keyvault-pkcs11 +$/);
  t.is(info.manufacturerID.length, 32);
  t.deepEqual(info.cryptokiVersion, { major: 2, minor: 40 });
  const slots = pkcs11.C_GetSlotList(true);
  t.is(slots.length, 2);
  const slotInfo = pkcs11.C_GetSlotInfo(slots[0]!);
  t.true((slotInfo.flags & CKF_TOKEN_PRESENT) !== 0);
  const token = pkcs11.C_GetTokenInfo(slots[0]!);
  // The token label is the configured label, cut to 32 bytes.
  t.is(token.label, longName.slice(0, 32));
  t.regex(token.manufacturerID, /^Azure Key Vault +$/);
  t.regex(token.model, /^Key Vault +$/);
  t.regex(token.serialNumber, /^[0-9a-f]{16}$/);
  t.true((token.flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0);
  t.true((token.flags & pkcs11js.CKF_USER_PIN_INITIALIZED) !== 0);
  t.is(token.flags & pkcs11js.CKF_LOGIN_REQUIRED, 0);
  t.is(token.flags & pkcs11js.CKF_WRITE_PROTECTED, 0);
  t.not(pkcs11.C_GetTokenInfo(slots[1]!).serialNumber, token.serialNumber);
  const bogus = Buffer.alloc(8);
  bogus.writeBigUInt64LE(99n);
  t.is(rvOf(() => pkcs11.C_GetTokenInfo(bogus)), pkcs11js.CKR_SLOT_ID_INVALID);
});

test.serial("sessions: flags, states, counts, and handles never reused", (t) => {
  const { pkcs11 } = fixture;
  const slot = fixture.key("b").slot;
  t.is(rvOf(() => pkcs11.C_OpenSession(slot, 0)), pkcs11js.CKR_SESSION_PARALLEL_NOT_SUPPORTED);
  const readOnly = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  const readWrite = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  t.is(pkcs11.C_GetSessionInfo(readOnly).state, CKS.RO_PUBLIC_SESSION);
  t.is(pkcs11.C_GetSessionInfo(readWrite).state, CKS.RW_PUBLIC_SESSION);
  t.is(pkcs11.C_GetTokenInfo(slot).sessionCount, 2);
  t.is(pkcs11.C_GetTokenInfo(slot).rwSessionCount, 1);
  pkcs11.C_CloseSession(readOnly);
  t.is(rvOf(() => pkcs11.C_GetSessionInfo(readOnly)), pkcs11js.CKR_SESSION_HANDLE_INVALID);
  t.is(rvOf(() => pkcs11.C_CloseSession(readOnly)), pkcs11js.CKR_SESSION_HANDLE_INVALID);
  const next = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  t.false(next.equals(readOnly));
  pkcs11.C_CloseAllSessions(slot);
  t.is(rvOf(() => pkcs11.C_GetSessionInfo(readWrite)), pkcs11js.CKR_SESSION_HANDLE_INVALID);
  t.is(pkcs11.C_GetTokenInfo(slot).sessionCount, 0);
});

test.serial("login accepts any PIN and follows the state rules; login state is shared by the token's sessions", (t) => {
  const { pkcs11 } = fixture;
  const slot = fixture.key("b").slot;
  const first = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  const second = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  t.is(rvOf(() => pkcs11.C_Logout(first)), pkcs11js.CKR_USER_NOT_LOGGED_IN);
  t.is(rvOf(() => pkcs11.C_Login(first, 7, "x")), pkcs11js.CKR_USER_TYPE_INVALID);
  t.is(rvOf(() => pkcs11.C_Login(first, pkcs11js.CKU_SO, "x")), pkcs11js.CKR_SESSION_READ_ONLY_EXISTS);
  pkcs11.C_Login(first, pkcs11js.CKU_USER, "any pin at all");
  t.is(pkcs11.C_GetSessionInfo(first).state, CKS.RO_USER_FUNCTIONS);
  t.is(pkcs11.C_GetSessionInfo(second).state, CKS.RW_USER_FUNCTIONS);
  t.is(rvOf(() => pkcs11.C_Login(second, pkcs11js.CKU_USER, "")), pkcs11js.CKR_USER_ALREADY_LOGGED_IN);
  t.is(rvOf(() => pkcs11.C_Login(second, pkcs11js.CKU_SO, "")), pkcs11js.CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
  pkcs11.C_Logout(second);
  t.is(pkcs11.C_GetSessionInfo(first).state, CKS.RO_PUBLIC_SESSION);
  pkcs11.C_CloseSession(first);
  pkcs11.C_Login(second, pkcs11js.CKU_SO, "");
  t.is(pkcs11.C_GetSessionInfo(second).state, CKS.RW_SO_FUNCTIONS);
  t.is(rvOf(() => pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION)), pkcs11js.CKR_SESSION_READ_WRITE_SO_EXISTS);
  // Closing the last session logs the token out.
  pkcs11.C_CloseSession(second);
  const again = openSession(fixture, "b");
  t.is(pkcs11.C_GetSessionInfo(again).state, CKS.RO_PUBLIC_SESSION);
  pkcs11.C_CloseSession(again);
});
