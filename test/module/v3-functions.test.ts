// The PKCS#11 3.0 session functions C_LoginUser and C_SessionCancel, through C_GetInterface's 3.0 table and the
// real helper. pkcs11js only speaks 2.40, so a small C driver (v3-driver.c, compiled here) makes the calls.
import test from "ava";
import { createHash, verify } from "node:crypto";
import path from "node:path";
import { compileDriver, runHost, rv as CKR } from "../native/driver.ts";
import { modulePath, repoRoot, startModuleFixture, type ModuleFixture } from "./harness.ts";

const CKS_RO_PUBLIC_SESSION = "0";
const CKS_RO_USER_FUNCTIONS = "1";

let fixture: ModuleFixture;
let driver: string;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "v3-ec:EC:P-256", skipInitialize: true });
  driver = compileDriver(path.join(repoRoot, "test", "module", "v3-driver.c"));
});
test.after.always(() => fixture?.close());

test("C_LoginUser and C_SessionCancel from the 3.0 table follow the spec, and a signature after a cancel verifies", async (t) => {
  const message = Buffer.from("PKCS#11 3.0 session functions");
  const digest = createHash("sha256").update(message).digest();
  const { stdout, values: v } = await runHost(driver, [modulePath, digest.toString("hex")]);
  t.is(v.get("done"), "1", stdout);
  t.is(v.get("Initialize"), CKR.OK);
  t.is(v.get("OpenSession"), CKR.OK);

  // Login with a user name: any PIN, the state rules of C_Login.
  t.is(v.get("LoginUser"), CKR.OK);
  t.is(v.get("LoginUser.state"), CKS_RO_USER_FUNCTIONS);
  t.is(v.get("LoginUser.again"), CKR.USER_ALREADY_LOGGED_IN);
  t.is(v.get("LoginUser.nullPinWithLength"), CKR.ARGUMENTS_BAD);
  t.is(v.get("Logout"), CKR.OK);
  t.is(v.get("Logout.state"), CKS_RO_PUBLIC_SESSION);
  t.is(v.get("LoginUser.badSession"), CKR.SESSION_HANDLE_INVALID);

  // Cancelling the find leaves the signature operation active; cancelling the signature ends it.
  t.is(v.get("keys"), "1");
  t.is(v.get("SignInit"), CKR.OK);
  t.is(v.get("FindObjectsInit"), CKR.OK);
  t.is(v.get("SessionCancel.find"), CKR.OK);
  t.is(v.get("FindObjects.afterCancel"), CKR.OPERATION_NOT_INITIALIZED);
  t.is(v.get("SignInit.stillActive"), CKR.OPERATION_ACTIVE);
  t.is(v.get("SessionCancel.sign"), CKR.OK);
  t.is(v.get("Sign.afterCancel"), CKR.OPERATION_NOT_INITIALIZED);
  t.is(v.get("SignInit.afterCancel"), CKR.OK);
  t.is(v.get("Sign"), CKR.OK);
  const signature = Buffer.from(v.get("signature") ?? "", "hex");
  t.is(signature.length, 64);
  t.true(verify("sha256", message, { key: fixture.key("v3-ec").publicKey, dsaEncoding: "ieee-p1363" }, signature), "the signature must verify against the vault's JWK");
  t.is(v.get("SessionCancel.nothingActive"), CKR.OK);
  t.is(v.get("SessionCancel.badSession"), CKR.SESSION_HANDLE_INVALID);
  t.is(v.get("CloseSession"), CKR.OK);
  t.is(v.get("Finalize"), CKR.OK);
  t.is(v.get("SessionCancel.finalized"), CKR.CRYPTOKI_NOT_INITIALIZED);
});
