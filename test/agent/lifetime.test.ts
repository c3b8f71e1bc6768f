// How many agents there are and for how long: an idle agent exits and tidies up after itself, the next client
// starts a new one; 64 clients arriving at once with no agent running start exactly one. pkcs11-tool clients,
// every signature verified against the vault's JWK.
import test from "ava";
import { existsSync } from "node:fs";
import {
  FALLBACK_LINE,
  agentPid,
  agentProcesses,
  clientEnv,
  connectRaw,
  describe,
  eventually,
  exitedWithin,
  foregroundAgent,
  hello,
  isAgentProcess,
  listeningPids,
  readText,
  runtimeFor,
  seenDuring,
  startVault,
  toolSign,
  type ModuleFixture,
} from "./fixture.ts";

let vault: ModuleFixture;
test.before(async () => {
  vault = await startVault("ec-key:EC:P-256");
});
test.after.always(async () => {
  await vault?.close();
});

test("an idle agent exits and removes its socket and pid file; the next client starts a new one", async (t) => {
  const runtime = runtimeFor(t);
  // Read by the agent from the environment of the process that starts it.
  const env = clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_AGENT_IDLE_SECONDS: "1" });
  const key = vault.key("ec-key");
  const first = await toolSign(key, env);
  t.is(first.result.code, 0, describe(first.result));
  t.true(first.verified);
  const firstPid = agentPid(runtime);
  if (firstPid === undefined) return t.fail("no agent.pid after the first client");

  t.true(await eventually(() => !isAgentProcess(firstPid, runtime.socketPath), 30_000), `agent ${firstPid} did not exit when idle`);
  t.false(existsSync(runtime.socketPath), "its socket is gone");
  t.false(existsSync(runtime.pidFile), "its pid file is gone");
  t.regex(readText(runtime.logFile), new RegExp(`agent ${firstPid} stopping \\(idle for 1 s\\)`));

  const second = await toolSign(key, env);
  t.is(second.result.code, 0, describe(second.result));
  t.true(second.verified);
  t.notRegex(second.result.stderr, FALLBACK_LINE);
  const secondPid = agentPid(runtime);
  t.truthy(secondPid);
  t.not(secondPid, firstPid, "a new agent");
  t.deepEqual(listeningPids(readText(runtime.logFile), runtime.socketPath), [firstPid, secondPid!]);
});

test("64 clients at once with no agent running start exactly one agent, and every signature verifies", async (t) => {
  const runtime = runtimeFor(t);
  const env = clientEnv(vault, runtime);
  const key = vault.key("ec-key");
  const runs = await Promise.all(Array.from({ length: 64 }, () => toolSign(key, env, { timeoutMs: 120_000 })));
  for (const [index, signed] of runs.entries()) {
    t.is(signed.result.code, 0, `client ${index}: ${describe(signed.result)}`);
    t.true(signed.verified, `client ${index}: the signature verifies`);
    t.notRegex(signed.result.stderr, FALLBACK_LINE, `client ${index}`);
  }
  const log = readText(runtime.logFile);
  t.is(listeningPids(log, runtime.socketPath).length, 1, log);
  t.notRegex(log, /an agent already listens/, "no second agent even tried");
  const pid = agentPid(runtime);
  t.deepEqual(agentProcesses(runtime.socketPath), pid === undefined ? [] : [pid], "one agent process, the one in agent.pid");
  t.deepEqual(listeningPids(log, runtime.socketPath), pid === undefined ? [] : [pid]);
});

test("a context without connections for the idle time is ended while the agent stays up for another one", async (t) => {
  const runtime = runtimeFor(t);
  // In the foreground, with debug lines, which name each context that ends.
  const agent = await foregroundAgent(runtime.socketPath, ["--idle-seconds", "1"], vault, { AZURE_KEYVAULT_PKCS11_DEBUG: "1" });
  t.teardown(() => agent.stop());
  // A connection of another context keeps the agent itself from idling out.
  const holder = await connectRaw(runtime.socketPath);
  t.teardown(() => holder.socket.destroy());
  holder.socket.write(hello(clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_TIMEOUT_MS: "45000" })));
  t.true(await eventually(() => holder.replies.length === 1, 10_000), "the holder's hello is answered");

  const env = clientEnv(vault, runtime);
  const key = vault.key("ec-key");
  const first = await seenDuring(vault, () => toolSign(key, env));
  t.is(first.value.result.code, 0, describe(first.value.result));
  t.true(first.value.verified);
  t.true(first.seen.tokens >= 1, JSON.stringify(first.seen));
  const ended = /context [0-9a-f]{12} idle for 1 s; ending it/;
  t.true(await eventually(() => ended.test(agent.output()), 20_000), `the client's context did not end:\n${agent.output()}`);
  t.is(agent.child.exitCode, null, "the agent stays for the holder");
  t.false(holder.isClosed());

  const second = await seenDuring(vault, () => toolSign(key, env));
  t.is(second.value.result.code, 0, describe(second.value.result));
  t.true(second.value.verified);
  t.true(second.seen.tokens >= 1 && (second.seen.requests["get-key"] ?? 0) >= 1, `a new context: ${JSON.stringify(second.seen)}`);

  holder.socket.destroy();
  t.true(await exitedWithin(agent, 30_000), `the agent did not exit once idle:\n${agent.output()}`);
  t.is(agent.child.exitCode, 0, agent.output());
});
