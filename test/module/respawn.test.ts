// A helper that dies or stops answering, with the real helper and the emulator: the application's sessions, login
// state and object handles survive on the replacement; only active operations are lost; a call that was reported
// as failed has no later effect; and no zombie is left behind. Every signature is verified against the vault's JWK.
import test from "ava";
import { verify } from "node:crypto";
import { readFileSync } from "node:fs";
import pkcs11js from "pkcs11js";
import { CKS } from "../../src/pkcs11/constants.ts";
import { childPids, privateKeyOf, rvOf, rvOfAsync, startModuleFixture, type Handle, type ModuleFixture } from "./harness.ts";

const CALL_TIMEOUT_MS = 1500;

let fixture: ModuleFixture;
test.before(async () => {
  // Read by the shim at C_Initialize, which the fixture makes.
  process.env.AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS = String(CALL_TIMEOUT_MS);
  fixture = await startModuleFixture({ keys: "ec:EC:P-256" });
});
test.after.always(async () => {
  await fixture?.close();
  delete process.env.AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS;
});

function helperPid(): number {
  const pids = childPids().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("helper.cjs");
    } catch {
      return false;
    }
  });
  if (pids.length !== 1) throw new Error(`expected one helper, found ${pids.join(", ") || "none"}`);
  return pids[0]!;
}

/** The process state letter of /proc/<pid>/stat (Z = zombie), or undefined once the pid is reaped. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}

/**
 * Until the killed helper has exited as a whole: its main thread turns zombie before node's other threads are gone,
 * and only then does the kernel close its socket, so only then is the death certain to be seen by the next call.
 */
async function exited(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const state = processState(pid);
    if (state === undefined) return;
    let threads = 0;
    try {
      threads = Number(/^Threads:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      return;
    }
    if (state === "Z" && threads <= 1) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`pid ${pid} did not exit`);
}

function signsAndVerifies(session: Handle, key: Handle, message: string): boolean {
  const { pkcs11 } = fixture;
  const data = Buffer.from(message);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, key);
  const signature = pkcs11.C_Sign(session, data, Buffer.alloc(132));
  return verify("sha256", data, { key: fixture.key("ec").publicKey, dsaEncoding: "ieee-p1363" }, signature);
}

function resume(pid: number): void {
  try {
    process.kill(pid, "SIGCONT");
  } catch {
    // Already gone: the module killed it.
  }
}

test.serial("a killed helper: the session, its login state and the key handle carry on; the active operation is lost", async (t) => {
  const { pkcs11 } = fixture;
  const slot = fixture.key("ec").slot;
  const session = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  pkcs11.C_Login(session, pkcs11js.CKU_USER, "any pin");
  const key = privateKeyOf(fixture, session);
  t.true(signsAndVerifies(session, key, "before"));
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, key);

  const old = helperPid();
  process.kill(old, "SIGKILL");
  await exited(old);
  // The operation lived in the helper that died; the session did not.
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("x"), Buffer.alloc(132))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  t.not(helperPid(), old);
  t.is(processState(old), undefined, "the dead helper is reaped");

  const info = pkcs11.C_GetSessionInfo(session);
  t.deepEqual(info.slotID, slot);
  t.is(info.state, CKS.RW_USER_FUNCTIONS);
  t.is(info.flags & pkcs11js.CKF_RW_SESSION, pkcs11js.CKF_RW_SESSION);
  t.is(rvOf(() => pkcs11.C_Login(session, pkcs11js.CKU_USER, "any pin")), pkcs11js.CKR_USER_ALREADY_LOGGED_IN);
  // The same object handle, found again by the same template, signs on the new helper.
  t.deepEqual(privateKeyOf(fixture, session), key);
  t.true(signsAndVerifies(session, key, "after"));
  // A session opened now does not collide with the restored one.
  const second = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  t.notDeepEqual(second, session);
  t.is(pkcs11.C_GetTokenInfo(slot).sessionCount, 2);
  pkcs11.C_CloseSession(second);
  pkcs11.C_Logout(session);
  pkcs11.C_CloseSession(session);
});

test.serial("a call given up on while the helper is frozen has no later effect (C_SignInit)", (t) => {
  const { pkcs11 } = fixture;
  const session = pkcs11.C_OpenSession(fixture.key("ec").slot, pkcs11js.CKF_SERIAL_SESSION);
  const key = privateKeyOf(fixture, session);
  const frozen = helperPid();
  process.kill(frozen, "SIGSTOP");
  try {
    t.is(rvOf(() => pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, key)), pkcs11js.CKR_DEVICE_ERROR);
  } finally {
    resume(frozen);
  }
  // The application was told C_SignInit failed, so no operation may be active now.
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("x"), Buffer.alloc(132))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  t.true(signsAndVerifies(session, key, "after the freeze"));
  t.not(helperPid(), frozen);
  pkcs11.C_CloseSession(session);
});

test.serial("a call given up on while the helper is frozen has no later effect (C_Sign length query)", (t) => {
  const { pkcs11 } = fixture;
  const session = pkcs11.C_OpenSession(fixture.key("ec").slot, pkcs11js.CKF_SERIAL_SESSION);
  const key = privateKeyOf(fixture, session);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, key);
  const frozen = helperPid();
  process.kill(frozen, "SIGSTOP");
  try {
    // A buffer too small for the signature: the length query of the C_Sign(NULL, &len).
    t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("x"), Buffer.alloc(1))), pkcs11js.CKR_DEVICE_ERROR);
  } finally {
    resume(frozen);
  }
  // The failed C_Sign ended the operation: a new C_SignInit must succeed, not return CKR_OPERATION_ACTIVE.
  t.true(signsAndVerifies(session, key, "a fresh operation"));
  pkcs11.C_CloseSession(session);
});

test.serial("a helper killed mid-call: that call fails with CKR_DEVICE_ERROR, no zombie stays, the next call signs", async (t) => {
  const { pkcs11 } = fixture;
  const session = pkcs11.C_OpenSession(fixture.key("ec").slot, pkcs11js.CKF_SERIAL_SESSION);
  const key = privateKeyOf(fixture, session);
  pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, key);
  const victim = helperPid();
  // Frozen, the helper cannot answer: the request is surely in flight when it dies.
  process.kill(victim, "SIGSTOP");
  const pending = rvOfAsync(() => pkcs11.C_SignAsync(session, Buffer.from("in flight"), Buffer.alloc(132)));
  await new Promise((resolve) => setTimeout(resolve, 200));
  process.kill(victim, "SIGKILL");
  t.is(await pending, pkcs11js.CKR_DEVICE_ERROR);
  t.is(processState(victim), undefined, "reaped as soon as the module saw it die");
  t.true(signsAndVerifies(session, key, "on the replacement"));
  pkcs11.C_CloseSession(session);
});

test.serial("C_SeedRandom of 64 MiB returns CKR_RANDOM_SEED_NOT_SUPPORTED, one of its own return values", (t) => {
  const { pkcs11 } = fixture;
  const session = pkcs11.C_OpenSession(fixture.key("ec").slot, pkcs11js.CKF_SERIAL_SESSION);
  t.is(rvOf(() => pkcs11.C_SeedRandom(session, Buffer.alloc(64 * 1024 * 1024 + 1))), pkcs11js.CKR_RANDOM_SEED_NOT_SUPPORTED);
  t.is(rvOf(() => pkcs11.C_SeedRandom(session, Buffer.alloc(16))), pkcs11js.CKR_RANDOM_SEED_NOT_SUPPORTED);
  pkcs11.C_CloseSession(session);
  t.is(rvOf(() => pkcs11.C_SeedRandom(session, Buffer.alloc(16))), pkcs11js.CKR_SESSION_HANDLE_INVALID);
});
