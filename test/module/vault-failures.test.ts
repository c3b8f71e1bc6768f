// What an application sees when the vault fails after the key was loaded: a deleted key is a removed device, an
// unreachable vault a device error; and the mapping of every VaultError kind, which lives in one place.
import test from "ava";
import pkcs11js from "pkcs11js";
import { VaultError, type VaultErrorKind } from "../../src/vault/types.ts";
import { vaultFailure } from "../../src/token/vault-errors.ts";
import { CKR } from "../../src/pkcs11/constants.ts";
import { openSession, privateKeyOf, rvOf, startModuleFixture, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "doomed:EC:P-256,other:EC:P-256" });
});
test.after.always(() => fixture?.close());

test("every VaultError kind maps to a precise return value", (t) => {
  const expected: Record<VaultErrorKind, [load: number, sign: number, decrypt: number]> = {
    "not-found": [CKR.DEVICE_REMOVED, CKR.DEVICE_REMOVED, CKR.DEVICE_REMOVED],
    forbidden: [CKR.DEVICE_ERROR, CKR.FUNCTION_REJECTED, CKR.FUNCTION_REJECTED],
    "bad-parameter": [CKR.FUNCTION_FAILED, CKR.FUNCTION_FAILED, CKR.ENCRYPTED_DATA_INVALID],
    auth: [CKR.DEVICE_ERROR, CKR.DEVICE_ERROR, CKR.DEVICE_ERROR],
    throttled: [CKR.DEVICE_ERROR, CKR.DEVICE_ERROR, CKR.DEVICE_ERROR],
    network: [CKR.DEVICE_ERROR, CKR.DEVICE_ERROR, CKR.DEVICE_ERROR],
    timeout: [CKR.DEVICE_ERROR, CKR.DEVICE_ERROR, CKR.DEVICE_ERROR],
    other: [CKR.DEVICE_ERROR, CKR.DEVICE_ERROR, CKR.DEVICE_ERROR],
    conflict: [CKR.FUNCTION_FAILED, CKR.FUNCTION_FAILED, CKR.FUNCTION_FAILED],
  };
  for (const [kind, [load, sign, decrypt]] of Object.entries(expected) as Array<[VaultErrorKind, [number, number, number]]>) {
    const error = new VaultError(kind, `simulated ${kind}`);
    t.is(vaultFailure(error, "test", "load").rv, load, kind);
    t.is(vaultFailure(error, "test", "sign").rv, sign, kind);
    t.is(vaultFailure(error, "test", "decrypt").rv, decrypt, kind);
  }
  t.is(vaultFailure(new Error("surprise"), "test", "sign").rv, CKR.DEVICE_ERROR);
});

test.serial("a key deleted after loading: C_Sign returns CKR_DEVICE_REMOVED", async (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "doomed");
  const key = privateKeyOf(fixture, session);
  const deleted = await fixture.vaultRequest("DELETE", "/keys/doomed?api-version=7.4");
  t.is(deleted.status, 200);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, key);
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.alloc(32, 1), Buffer.alloc(64))), pkcs11js.CKR_DEVICE_REMOVED);
  pkcs11.C_CloseSession(session);
});

test.serial("an unreachable vault: C_Sign returns CKR_DEVICE_ERROR, and the length query still answers", async (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "other");
  const key = privateKeyOf(fixture, session);
  await fixture.emulator.close();
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, key);
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.alloc(32, 1), Buffer.alloc(8))), pkcs11js.CKR_BUFFER_TOO_SMALL);
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.alloc(32, 1), Buffer.alloc(64))), pkcs11js.CKR_DEVICE_ERROR);
  pkcs11.C_CloseSession(session);
});
