// Who and what the agent admits: connections from other users are refused unless listed (--allow-uid), a default
// folder open to others is refused by the shim, malformed frames close only the connection that sent them, and no
// credential reaches agent.log or the host's stderr. Signatures are verified against the vault's JWK.
import test from "ava";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { run } from "../clients/process.ts";
import {
  FALLBACK_LINE,
  agentPid,
  clientEnv,
  closedWithin,
  connectRaw,
  describe,
  eventually,
  foregroundAgent,
  frame,
  hello,
  modulePath,
  readText,
  runtimeFor,
  startVault,
  toolSign,
  verifyEcdsa,
  type ModuleFixture,
} from "./fixture.ts";

const OTHER_UID = 65534;
/** Some user that is neither this one nor OTHER_UID. */
const LISTED_UID = 4242;

let vault: ModuleFixture;
test.before(async () => {
  vault = await startVault("ec-key:EC:P-256");
});
test.after.always(async () => {
  await vault?.close();
});

test.serial("a connection from another user is refused unless --allow-uid lists it, and a listed one is served with the agent's own config", async (t) => {
  // A shared agent's folder is 0755 and its socket 0666, so that the other user can reach it at all.
  const shared = mkdtempSync(path.join(tmpdir(), "akv-agent-shared-"));
  chmodSync(shared, 0o755);
  t.teardown(() => rmSync(shared, { recursive: true, force: true }));
  const socketPath = path.join(shared, "agent.sock");
  const key = vault.key("ec-key");
  const message = Buffer.from("signed for another user");
  const input = path.join(shared, "message");
  writeFileSync(input, message, { mode: 0o644 });
  const env: NodeJS.ProcessEnv = {
    ...clientEnv(vault, undefined, { AZURE_KEYVAULT_PKCS11_AGENT: "1", AZURE_KEYVAULT_PKCS11_AGENT_SOCKET: socketPath }),
    HOME: shared,
  };
  // The signature goes to stdout: the other user cannot write in our folders.
  const asOtherUser = () =>
    run(
      "setpriv",
      [`--reuid=${OTHER_UID}`, `--regid=${OTHER_UID}`, "--clear-groups", "pkcs11-tool", "--module", modulePath, "--token-label", key.label,
        "--sign", "-m", "ECDSA-SHA256", "--label", key.name, "-i", input],
      { env, cwd: shared, timeoutMs: 60_000 },
    );

  const refusing = await foregroundAgent(socketPath, ["--allow-uid", String(LISTED_UID)], vault);
  let stopped = false;
  t.teardown(() => (stopped ? undefined : refusing.stop()));
  const refused = await asOtherUser();
  await eventually(() => refusing.output().includes(`refused a connection from uid ${OTHER_UID}`), 10_000);
  t.regex(refusing.output(), new RegExp(`refused a connection from uid ${OTHER_UID} \\(pid \\d+\\)`), refusing.output());
  const fallbacks = refused.stderr.split("\n").filter((line) => FALLBACK_LINE.test(line));
  t.is(fallbacks.length, 1, describe(refused));
  t.is(FALLBACK_LINE.exec(fallbacks[0] ?? "")?.[1], socketPath, describe(refused));
  await refusing.stop();
  stopped = true;
  t.false(existsSync(socketPath), "the stopped agent removed its socket");

  // A listed user is served with the agent's own environment and config, never with files its own names.
  const agentEnv = Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined && /^(AZURE_|IDENTITY_)/.test(entry[0])));
  const admitting = await foregroundAgent(socketPath, ["--allow-uid", String(OTHER_UID)], vault, agentEnv);
  t.teardown(() => admitting.stop());
  env.AZURE_KEYVAULT_PKCS11_CONFIG = "/nonexistent/config-of-another-user.json";
  const admitted = await asOtherUser();
  t.is(admitted.code, 0, `${describe(admitted)}\n--- agent ---\n${admitting.output()}`);
  t.notRegex(admitted.stderr, FALLBACK_LINE);
  t.true(verifyEcdsa(key, message, admitted.stdoutBytes), "the agent signed for the listed user");
  t.notRegex(admitting.output(), /refused a connection/);
});

test.serial("a default agent folder open to other users is refused by the shim; a private helper signs", async (t) => {
  const runtime = runtimeFor(t);
  mkdirSync(runtime.agentDir);
  chmodSync(runtime.agentDir, 0o755);
  const signed = await toolSign(vault.key("ec-key"), clientEnv(vault, runtime));
  t.is(signed.result.code, 0, describe(signed.result));
  t.true(signed.verified, "the private helper's signature verifies");
  const fallbacks = signed.result.stderr.split("\n").filter((line) => FALLBACK_LINE.test(line));
  t.is(fallbacks.length, 1, describe(signed.result));
  t.regex(fallbacks[0] ?? "", /mode 0700 .*mode 755/);
  t.false(existsSync(runtime.socketPath), "no agent was started there");
  t.is(agentPid(runtime), undefined);
});

test.serial("malformed frames close only the connection that sent them", async (t) => {
  const runtime = runtimeFor(t);
  const env = clientEnv(vault, runtime);
  const key = vault.key("ec-key");
  const first = await toolSign(key, env);
  t.is(first.result.code, 0, describe(first.result));
  t.true(first.verified);
  const pid = agentPid(runtime);
  t.truthy(pid);

  // A connection of the same context that stays open and must keep being served.
  const bystander = await connectRaw(runtime.socketPath);
  bystander.socket.write(hello(env));
  t.true(await eventually(() => bystander.replies.length === 1, 10_000), "the bystander's hello is answered");
  t.deepEqual(bystander.replies[0], [1, 0n]);

  const garbage = await connectRaw(runtime.socketPath);
  garbage.socket.write("this is not a hello at all\n");
  t.true(await closedWithin(garbage, 15_000), "garbage instead of a hello: closed");

  const wrongFirst = await connectRaw(runtime.socketPath);
  wrongFirst.socket.write(frame(1, 3));
  t.true(await closedWithin(wrongFirst, 15_000), "a first frame that is not the hello: closed");
  t.deepEqual(wrongFirst.replies, [], "and not answered");

  const oversized = await connectRaw(runtime.socketPath);
  oversized.socket.write(hello(env));
  t.true(await eventually(() => oversized.replies.length === 1 || oversized.isClosed(), 10_000));
  t.deepEqual(oversized.replies, [[1, 0n]], "its hello is answered");
  const huge = Buffer.alloc(12);
  huge.writeUInt32LE(64 * 1024 * 1024 + 1, 0);
  huge.writeUInt32LE(2, 4);
  huge.writeUInt32LE(3, 8);
  oversized.socket.write(huge);
  t.true(await closedWithin(oversized, 15_000), "a frame over 64 MiB: closed");

  const truncated = await connectRaw(runtime.socketPath);
  truncated.socket.write(hello(env));
  t.true(await eventually(() => truncated.replies.length === 1 || truncated.isClosed(), 10_000));
  t.deepEqual(truncated.replies, [[1, 0n]], "its hello is answered");
  const partial = frame(2, 3, Buffer.alloc(40));
  truncated.socket.end(partial.subarray(0, 20));
  t.true(await closedWithin(truncated, 15_000), "a truncated frame, then end of file: closed");

  t.false(bystander.isClosed(), "the bystander's connection is still open");
  bystander.socket.write(frame(7, 3));
  t.true(await eventually(() => bystander.replies.length === 2 || bystander.isClosed(), 10_000));
  t.is(bystander.replies[1]?.[0], 7, "and still answered (C_GetInfo)");
  bystander.socket.destroy();

  const after = await toolSign(key, env);
  t.is(after.result.code, 0, describe(after.result));
  t.true(after.verified, "the agent still signs");
  t.notRegex(after.result.stderr, FALLBACK_LINE);
  t.is(agentPid(runtime), pid, "the same agent");
  const log = readText(runtime.logFile);
  t.regex(log, /first frame of \d+ bytes is no hello/, log);
  t.regex(log, /not the hello/, log);
});

test.serial("no credential in agent.log or on the host's stderr, with debug logging on", async (t) => {
  const runtime = runtimeFor(t);
  const key = vault.key("ec-key");
  const debugEnv = clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_DEBUG: "1" });
  const signed = await toolSign(key, debugEnv);
  t.is(signed.result.code, 0, describe(signed.result));
  t.true(signed.verified);

  // An access token of the shape the Azure CLI hands out (a JWT with an exp in 2100); the emulator refuses it.
  const payload = Buffer.from(JSON.stringify({ exp: 4102444800, aud: "https://vault.azure.net", oid: "akv-agent-test" })).toString("base64url");
  const fakeToken = `eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.${payload}.c2VjcmV0LXNpZ25hdHVyZS1vZi10aGUtYWdlbnQtdGVzdA`;
  const withToken = await toolSign(key, { ...debugEnv, AZURE_CLI_ACCESS_TOKEN: fakeToken });
  t.false(withToken.result.timedOut, describe(withToken.result));
  t.regex(withToken.result.stderr, /credential: using AZURE_CLI_ACCESS_TOKEN/, "the token reached the agent's context");

  const log = readText(runtime.logFile);
  t.regex(log, /listening on/, "agent.log is written");
  t.regex(log, /new context/, "with debug lines");
  t.regex(signed.result.stderr, /connected to the agent at/, "the client's debug lines are on");
  const secrets = [vault.emulator.identityHeader, fakeToken, payload];
  for (const [name, text] of [["agent.log", log], ["first client's stderr", signed.result.stderr], ["second client's stderr", withToken.result.stderr]] as const) {
    for (const secret of secrets) t.false(text.includes(secret), `${name} holds a secret:\n${text}`);
  }
});
