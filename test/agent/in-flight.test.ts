// Calls in flight when the agent goes away, with this process as the host (pkcs11js, C_SignAsync keeps calls in
// flight while the test acts): SIGTERM lets them finish and the agent exits 0; SIGKILL fails them with
// CKR_DEVICE_ERROR and the next call runs on a new agent with the same sessions. The vault holds each sign
// (emulator stall faults) so that the calls are provably in flight; signatures are verified against its JWK.
import test from "ava";
import { existsSync } from "node:fs";
import pkcs11js from "pkcs11js";
import { privateKeyOf, rvOf, rvOfAsync, type Handle } from "../module/harness.ts";
import {
  FALLBACK_LINE,
  agentPid,
  eventually,
  exitedWithin,
  foregroundAgent,
  isAgentProcess,
  makeRuntime,
  readText,
  startVault,
  stopAgents,
  verifyEcdsa,
  type ModuleFixture,
  type Runtime,
} from "./fixture.ts";

const STALL_MS = 2000;
const MECHANISM = { mechanism: pkcs11js.CKM_ECDSA_SHA256 };

let vault: ModuleFixture;
test.before(async () => {
  vault = await startVault("ec-key:EC:P-256");
  // Read by the shim at C_Initialize: this process uses the agent of the runtime folder each test sets.
  delete process.env.AZURE_KEYVAULT_PKCS11_AGENT;
  // The vault's deadline is well above the stall, so that the stalled sign succeeds.
  process.env.AZURE_KEYVAULT_PKCS11_TIMEOUT_MS = "20000";
});
test.after.always(async () => {
  await vault?.close();
});

function useRuntime(t: { teardown(fn: () => Promise<void> | void): void }): Runtime {
  const runtime = makeRuntime();
  process.env.XDG_RUNTIME_DIR = runtime.dir;
  t.teardown(async () => {
    try {
      vault.pkcs11.C_Finalize();
    } catch {
      // Not initialised, or already finalised by the test.
    }
    await vault.emulator.setFaults(undefined);
    await stopAgents(runtime);
    runtime.remove();
  });
  return runtime;
}

function openSigningSession(): { session: Handle; key: Handle } {
  const { pkcs11 } = vault;
  const [slot] = pkcs11.C_GetSlotList(true);
  const session = pkcs11.C_OpenSession(slot!, pkcs11js.CKF_SERIAL_SESSION);
  return { session, key: privateKeyOf(vault, session) };
}

async function signCount(): Promise<number> {
  return (await vault.emulator.requestCounts("ec-key")).sign ?? 0;
}

/** Resolves with `promise`'s outcome, or "hung" after `ms`: a hang detector, not a timing assertion. */
function orHang<T>(promise: Promise<T>, ms: number): Promise<T | "hung"> {
  return Promise.race([promise, new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), ms).unref())]);
}

test.serial("SIGTERM with a sign in flight: the sign completes, the agent exits 0 and removes its socket and pid file", async (t) => {
  const runtime = useRuntime(t);
  // The agent in the foreground, so that its exit status is ours to see.
  const agent = await foregroundAgent(runtime.socketPath, [], vault);
  t.teardown(() => agent.stop());

  const { pkcs11 } = vault;
  pkcs11.C_Initialize();
  const { session, key } = openSigningSession();
  t.is(agentPid(runtime), agent.child.pid, "this process uses the test's agent");

  await vault.emulator.setFaults({ stallRate: 1, stallMs: STALL_MS, operations: ["sign"] });
  const before = await signCount();
  const data = Buffer.from("signed while the agent stops");
  pkcs11.C_SignInit(session, MECHANISM, key);
  const signing = pkcs11.C_SignAsync(session, data, Buffer.alloc(132));
  t.true(await eventually(async () => (await signCount()) > before, 10_000), "the sign reached the vault");
  process.kill(agent.child.pid!, "SIGTERM");

  const signature = await orHang(signing.catch((error: Error) => error), 30_000);
  if (signature === "hung") return t.fail("the sign in flight never completed");
  if (signature instanceof Error) return t.fail(`the sign in flight failed: ${signature.message}\n${agent.output()}`);
  t.true(verifyEcdsa(vault.key("ec-key"), data, signature), "the sign in flight completed with a valid signature");
  t.true(await exitedWithin(agent, 35_000), agent.output());
  t.is(agent.child.exitCode, 0, agent.output());
  t.false(existsSync(runtime.socketPath), "its socket is gone");
  t.false(existsSync(runtime.pidFile), "its pid file is gone");
  t.regex(agent.output(), /stopping \(SIGTERM\)/);
});

test.serial("SIGKILL with signs in flight: they fail with CKR_DEVICE_ERROR; the next call runs on a new agent with the same session", async (t) => {
  const runtime = useRuntime(t);
  const { pkcs11 } = vault;
  pkcs11.C_Initialize();
  const signers = Array.from({ length: 4 }, () => openSigningSession());
  const firstPid = agentPid(runtime);
  if (firstPid === undefined || !isAgentProcess(firstPid, runtime.socketPath)) return t.fail("C_Initialize started no agent");

  await vault.emulator.setFaults({ stallRate: 1, stallMs: STALL_MS * 2, operations: ["sign"] });
  const before = await signCount();
  const calls = signers.map(({ session, key }, index) => {
    pkcs11.C_SignInit(session, MECHANISM, key);
    return rvOfAsync(() => pkcs11.C_SignAsync(session, Buffer.from(`in flight ${index}`), Buffer.alloc(132)));
  });
  t.true(await eventually(async () => (await signCount()) >= before + signers.length, 15_000), "every sign reached the vault");
  process.kill(firstPid, "SIGKILL");

  const outcomes = await orHang(Promise.all(calls), 15_000);
  t.deepEqual(outcomes, signers.map(() => pkcs11js.CKR_DEVICE_ERROR), "every call in flight failed with CKR_DEVICE_ERROR");
  await vault.emulator.setFaults(undefined);

  // The same session handle, on a new agent: the session was restored there.
  const { session, key } = signers[0]!;
  const data = Buffer.from("signed after the agent was killed");
  pkcs11.C_SignInit(session, MECHANISM, key);
  const signature = pkcs11.C_Sign(session, data, Buffer.alloc(132));
  t.true(verifyEcdsa(vault.key("ec-key"), data, signature), "the next call's signature verifies");
  const secondPid = agentPid(runtime);
  t.truthy(secondPid);
  t.not(secondPid, firstPid, "a new agent serves it");
  for (const signer of signers) t.is(pkcs11.C_GetSessionInfo(signer.session).slotID.length > 0, true, "every session is still open");
  t.notRegex(readText(runtime.logFile), FALLBACK_LINE);
});

test.serial("a call the shim gives up on closes its connection; the next call reconnects to the same agent, same session", async (t) => {
  // Read by the shim at C_Initialize.
  process.env.AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS = "1500";
  t.teardown(() => {
    delete process.env.AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS;
  });
  const runtime = useRuntime(t);
  const { pkcs11 } = vault;
  pkcs11.C_Initialize();
  const { session, key } = openSigningSession();
  const pid = agentPid(runtime);
  if (pid === undefined || !isAgentProcess(pid, runtime.socketPath)) return t.fail("C_Initialize started no agent");

  // A frozen agent answers nothing (the vault's own deadline would otherwise answer first).
  process.kill(pid, "SIGSTOP");
  try {
    t.is(rvOf(() => pkcs11.C_SignInit(session, MECHANISM, key)), pkcs11js.CKR_DEVICE_ERROR, "the call past its deadline fails");
  } finally {
    process.kill(pid, "SIGCONT");
  }
  // The application was told C_SignInit failed: no operation may be active on the reconnected session.
  t.is(rvOf(() => pkcs11.C_Sign(session, Buffer.from("x"), Buffer.alloc(132))), pkcs11js.CKR_OPERATION_NOT_INITIALIZED);
  const data = Buffer.from("signed after a timed-out call");
  pkcs11.C_SignInit(session, MECHANISM, key);
  const signature = pkcs11.C_Sign(session, data, Buffer.alloc(132));
  t.true(verifyEcdsa(vault.key("ec-key"), data, signature), "the next call's signature verifies");
  t.is(agentPid(runtime), pid, "the same agent");
  t.true(isAgentProcess(pid, runtime.socketPath), "which is still running");
  t.notRegex(readText(runtime.logFile), /listening on[^]*listening on/, "no second agent was started");
});
