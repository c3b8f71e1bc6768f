// Which processes share an agent context, proven by what the vault sees: a process that joins an existing context
// makes only its own data-plane call (no token, key or certificate request); a new config, config content or
// credential environment makes a new context with its own requests. Also: the agent sends its log lines to the
// host's stderr, and "agent": false in config.json keeps a process on a private helper unless the environment
// says otherwise. Clients are pkcs11-tool processes; signatures are verified against the vault's JWK.
import test from "ava";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import {
  FALLBACK_LINE,
  agentPid,
  clientEnv,
  describe,
  listeningPids,
  modulePath,
  readText,
  runtimeFor,
  seenDuring,
  startVault,
  toolSign,
  type ModuleFixture,
} from "./fixture.ts";
import { run } from "../clients/process.ts";

let vault: ModuleFixture;
test.before(async () => {
  vault = await startVault("ec-key:EC:P-256,rsa-key:RSA:2048");
});
test.after.always(async () => {
  await vault?.close();
});

test.serial("two processes share one agent: the second makes exactly one request, the sign", async (t) => {
  const runtime = runtimeFor(t);
  const env = clientEnv(vault, runtime);
  const key = vault.key("ec-key");

  const first = await seenDuring(vault, () => toolSign(key, env));
  t.is(first.value.result.code, 0, describe(first.value.result));
  t.true(first.value.verified, "the first signature verifies");
  t.notRegex(first.value.result.stderr, FALLBACK_LINE);
  const firstPid = agentPid(runtime);
  t.truthy(firstPid, "the first process started an agent (agent.pid)");
  t.true(first.seen.tokens >= 1, `the first process got a token: ${JSON.stringify(first.seen)}`);
  t.true((first.seen.requests["get-key"] ?? 0) >= 1, `the first process read the key: ${JSON.stringify(first.seen)}`);

  const second = await seenDuring(vault, () => toolSign(key, env));
  t.is(second.value.result.code, 0, describe(second.value.result));
  t.true(second.value.verified, "the second signature verifies");
  t.notRegex(second.value.result.stderr, FALLBACK_LINE);
  t.deepEqual(second.seen.requests, { sign: 1 }, "the second process: the sign and nothing else");
  t.is(second.seen.tokens, 0, "the second process used the shared token");
  t.is(agentPid(runtime), firstPid, "the same agent served both");
  t.deepEqual(listeningPids(readText(runtime.logFile), runtime.socketPath), [firstPid!]);
});

test.serial("different configs and credential environments get contexts of their own; repeats share them", async (t) => {
  const runtime = runtimeFor(t);
  const second = await startVault("ec-key:EC:P-256");
  t.teardown(() => second.close());

  // A second config file: the same key as another token label.
  const otherConfig = path.join(vault.dir, "config-other.json");
  writeFileSync(otherConfig, JSON.stringify({ slots: [{ key_name: "ec-key", label: "ec-other", vault_url: vault.emulator.url }] }));
  const variants: Array<{ name: string; env: NodeJS.ProcessEnv; vault: ModuleFixture; tokenLabel?: string }> = [
    { name: "the first config", env: clientEnv(vault, runtime), vault },
    { name: "a second config file", env: clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_CONFIG: otherConfig }), vault, tokenLabel: "ec-other" },
    { name: "an extra AZURE_KEYVAULT_PKCS11_TIMEOUT_MS", env: clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_TIMEOUT_MS: "45000" }), vault },
    // Another vault and managed identity (IDENTITY_ENDPOINT, IDENTITY_HEADER): its tokens must be its own. Its CA
    // comes through the config's ca_file; NODE_EXTRA_CA_CERTS alone has a test of its own below.
    { name: "a second emulator's identity", env: clientEnv(second, runtime, { AZURE_KEYVAULT_PKCS11_CONFIG: configWithCa(second) }), vault: second },
  ];
  const signWith = (variant: (typeof variants)[number]) =>
    seenDuring(variant.vault, () => toolSign(variant.vault.key("ec-key"), variant.env, { tokenLabel: variant.tokenLabel }));

  for (const variant of variants) {
    const { value, seen } = await signWith(variant);
    t.is(value.result.code, 0, `${variant.name}: ${describe(value.result)}`);
    t.true(value.verified, `${variant.name}: the signature verifies`);
    t.true(seen.tokens >= 1, `${variant.name} gets its own token: ${JSON.stringify(seen)}`);
    t.true((seen.requests["get-key"] ?? 0) >= 1, `${variant.name} reads the key itself: ${JSON.stringify(seen)}`);
  }
  for (const variant of variants) {
    const { value, seen } = await signWith(variant);
    t.is(value.result.code, 0, `${variant.name} again: ${describe(value.result)}`);
    t.true(value.verified, `${variant.name} again: the signature verifies`);
    t.deepEqual(seen.requests, { sign: 1 }, `${variant.name} again: only the sign`);
    t.is(seen.tokens, 0, `${variant.name} again: no token`);
  }

  // The same path with new content is a new context.
  writeFileSync(otherConfig, JSON.stringify({ slots: [{ key_name: "ec-key", label: "ec-other", vault_url: vault.emulator.url }] }, null, 2));
  const rewritten = await signWith(variants[1]!);
  t.is(rewritten.value.result.code, 0, describe(rewritten.value.result));
  t.true(rewritten.value.verified);
  t.true(rewritten.seen.tokens >= 1, `a rewritten config gets its own token: ${JSON.stringify(rewritten.seen)}`);
  t.true((rewritten.seen.requests["get-key"] ?? 0) >= 1, `a rewritten config reads the key: ${JSON.stringify(rewritten.seen)}`);

  t.is(listeningPids(readText(runtime.logFile), runtime.socketPath).length, 1, "one agent served every context");
});

/** A config for `on`'s key that trusts its emulator's CA through ca_file. */
function configWithCa(on: ModuleFixture): string {
  const file = path.join(on.dir, "config-ca.json");
  writeFileSync(file, JSON.stringify({ ca_file: on.emulator.caFile, slots: [{ key_name: "ec-key", label: "ec-key", vault_url: on.emulator.url }] }));
  return file;
}

test.serial("a context trusts its own NODE_EXTRA_CA_CERTS, not that of the process that started the agent", async (t) => {
  const runtime = runtimeFor(t);
  const second = await startVault("ec-key:EC:P-256");
  t.teardown(() => second.close());
  // The agent starts with the first vault's environment (NODE_EXTRA_CA_CERTS = its CA).
  const first = await toolSign(vault.key("ec-key"), clientEnv(vault, runtime));
  t.is(first.result.code, 0, describe(first.result));
  t.true(first.verified);
  // The second vault's client names its own CA the documented way; a private helper trusts it.
  const env = clientEnv(second, runtime);
  const control = await toolSign(second.key("ec-key"), { ...env, AZURE_KEYVAULT_PKCS11_AGENT: "0" });
  t.is(control.result.code, 0, `with a private helper: ${describe(control.result)}`);
  t.true(control.verified);
  const { value, seen } = await seenDuring(second, () => toolSign(second.key("ec-key"), env));
  t.is(value.result.code, 0, `through the agent: ${describe(value.result)}`);
  t.true(value.verified, "the signature verifies");
  t.true(seen.tokens >= 1 && (seen.requests["get-key"] ?? 0) >= 1, `a context of its own: ${JSON.stringify(seen)}`);
});

test.serial("a context without NODE_EXTRA_CA_CERTS does not trust the CA of the process that started the agent", async (t) => {
  const runtime = runtimeFor(t);
  const key = vault.key("ec-key");
  const first = await toolSign(key, clientEnv(vault, runtime));
  t.is(first.result.code, 0, describe(first.result));
  t.true(first.verified);
  // Without the emulator's CA, a private helper refuses the vault's TLS certificate.
  const env = clientEnv(vault, runtime, { NODE_EXTRA_CA_CERTS: undefined });
  const control = await toolSign(key, { ...env, AZURE_KEYVAULT_PKCS11_AGENT: "0" });
  t.not(control.result.code, 0, `with a private helper: ${describe(control.result)}`);
  t.regex(control.result.stderr, /UNABLE_TO_VERIFY_LEAF_SIGNATURE/, describe(control.result));
  const throughAgent = await toolSign(key, env);
  t.notRegex(throughAgent.result.stderr, FALLBACK_LINE);
  t.not(throughAgent.result.code, 0, `through the agent, the vault must be as untrusted: ${describe(throughAgent.result)}`);
  t.false(throughAgent.verified, "the agent signed over a TLS connection this process does not trust");
});

test.serial("a helper's warning for a call reaches the host's stderr through the agent", async (t) => {
  const runtime = runtimeFor(t);
  const env = clientEnv(vault, runtime);
  const key = vault.key("rsa-key");
  // A first client sets the context up, so that the second one provably runs in the agent: a private helper
  // would need a token and the key.
  const warmup = await run("pkcs11-tool", ["--module", modulePath, "--token-label", key.label, "-O"], { env });
  t.is(warmup.code, 0, describe(warmup));
  const pid = agentPid(runtime);
  t.truthy(pid);

  const input = path.join(runtime.dir, "not-a-digestinfo");
  writeFileSync(input, randomBytes(32));
  const { value: result, seen } = await seenDuring(vault, () =>
    run("pkcs11-tool", ["--module", modulePath, "--token-label", key.label, "--sign", "-m", "RSA-PKCS", "--label", key.name, "-i", input, "-o", `${input}.sig`], { env }),
  );
  t.not(result.code, 0, describe(result));
  t.regex(result.stderr, /CKR_DATA_INVALID/, describe(result));
  t.regex(result.stderr, /^AZURE_KEYVAULT: warning: .*the 32-byte input is not a DER DigestInfo.*-> CKR_DATA_INVALID$/m, describe(result));
  t.notRegex(result.stderr, FALLBACK_LINE);
  t.deepEqual(seen, { requests: {}, tokens: 0 }, "the agent's context served the call");
  t.is(agentPid(runtime), pid);
  t.notRegex(readText(runtime.logFile), /DigestInfo/, "the line went to the host, not to agent.log");
});

test.serial('"agent": false in config.json keeps a process on a private helper, unless AZURE_KEYVAULT_PKCS11_AGENT=1', async (t) => {
  const runtime = runtimeFor(t);
  const config = path.join(vault.dir, "config-no-agent.json");
  writeFileSync(config, JSON.stringify({ agent: false, slots: [{ key_name: "ec-key", label: "ec-key", vault_url: vault.emulator.url }] }));
  const key = vault.key("ec-key");

  const privately = await toolSign(key, clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_CONFIG: config, AZURE_KEYVAULT_PKCS11_AGENT: undefined }));
  t.is(privately.result.code, 0, describe(privately.result));
  t.true(privately.verified);
  t.notRegex(privately.result.stderr, FALLBACK_LINE);
  t.false(existsSync(runtime.socketPath), "no agent socket");
  t.is(agentPid(runtime), undefined, "no agent");

  const forced = await toolSign(key, clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_CONFIG: config, AZURE_KEYVAULT_PKCS11_AGENT: "1", AZURE_KEYVAULT_PKCS11_DEBUG: "1" }));
  t.is(forced.result.code, 0, describe(forced.result));
  t.true(forced.verified);
  t.notRegex(forced.result.stderr, FALLBACK_LINE);
  t.regex(forced.result.stderr, /connected to the agent at /, describe(forced.result));
  t.true(existsSync(runtime.socketPath), "the agent listens");
  t.truthy(agentPid(runtime));
});

test.serial('an agent whose context config says "agent": false declines the hello: a private helper, no fallback line', async (t) => {
  const runtime = runtimeFor(t);
  // The shim's small scanner does not decode the escape, so it connects; the agent's JSON parser reads "agent".
  const config = path.join(vault.dir, "config-escaped-agent.json");
  writeFileSync(config, `{"\\u0061gent": false, "slots": [{"key_name": "ec-key", "label": "ec-key", "vault_url": "${vault.emulator.url}"}]}`);
  const signed = await toolSign(vault.key("ec-key"), clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_CONFIG: config, AZURE_KEYVAULT_PKCS11_DEBUG: "1" }));
  t.is(signed.result.code, 0, describe(signed.result));
  t.true(signed.verified);
  t.regex(signed.result.stderr, /the config says "agent": false; using a private helper/, describe(signed.result));
  t.notRegex(signed.result.stderr, FALLBACK_LINE);
  t.notRegex(signed.result.stderr, /connected to the agent at/);
  t.regex(signed.result.stderr, /started the helper/, "a private helper signed");
  t.true(existsSync(runtime.socketPath), "the agent it asked is there");
});

test.serial("a relative AZURE_KEYVAULT_PKCS11_CONFIG is found from each host's working folder", async (t) => {
  const runtime = runtimeFor(t);
  const key = vault.key("ec-key");
  const folders = ["a", "b"].map((name) => {
    const folder = path.join(vault.dir, `cwd-${name}`);
    mkdirSync(folder, { recursive: true });
    writeFileSync(path.join(folder, "config.json"), JSON.stringify({ slots: [{ key_name: "ec-key", label: `token-${name}`, vault_url: vault.emulator.url }] }));
    return { folder, tokenLabel: `token-${name}` };
  });
  const env = clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_CONFIG: "config.json" });
  for (const { folder, tokenLabel } of [...folders, ...folders]) {
    const signed = await toolSign(key, env, { cwd: folder, tokenLabel });
    t.is(signed.result.code, 0, `in ${folder}: ${describe(signed.result)}`);
    t.true(signed.verified, `in ${folder}`);
    t.notRegex(signed.result.stderr, FALLBACK_LINE);
  }
  t.is(listeningPids(readText(runtime.logFile), runtime.socketPath).length, 1, "one agent served both folders");
});
