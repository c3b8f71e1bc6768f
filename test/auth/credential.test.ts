import { createHash, verify } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import type { AccessToken, TokenCredential } from "@azure/core-auth";
import { CredentialUnavailableError } from "@azure/identity";
import {
  AuthFileError,
  CachedChainCredential,
  CredentialChainError,
  createCredential,
  findAuthFile,
  jwtExpiry,
  StaticTokenCredential,
  TokenCache,
} from "../../src/auth/index.ts";
import { setDebug } from "../../src/log/log.ts";
import { buildCaList, createVaultBackend, VaultError } from "../../src/vault/index.ts";
import { emulator, managedIdentityToken, moduleConfig, publicKeyOf, type RunningEmulator } from "../vault/helpers.ts";

const SCOPE = "https://vault.azure.net/.default";
let emu: RunningEmulator;

test.before(async () => {
  emu = await emulator({ keys: "ec:EC:P-256" });
});

test.after.always(async () => {
  await emu?.close();
});

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), "akv-auth-"));
}

function jwt(claims: Record<string, unknown>): string {
  return ["eyJhbGciOiJub25lIn0", Buffer.from(JSON.stringify(claims)).toString("base64url"), "c2ln"].join(".");
}

function writeAuthFile(dir: string, content: unknown, name = "azureauth.json"): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content));
  return file;
}

/** Signs through a backend using the given environment's credential chain; the signature is checked by node:crypto. */
async function signsWith(t: import("ava").ExecutionContext, env: NodeJS.ProcessEnv): Promise<void> {
  const backend = createVaultBackend(moduleConfig(emu), { env });
  try {
    const key = await backend.getKey(emu.url, "ec");
    const message = Buffer.from(`signed with ${Object.keys(env).join(",")}`);
    const signature = await backend.sign(key, "ES256", createHash("sha256").update(message).digest());
    t.true(verify("sha256", message, { key: publicKeyOf(key), dsaEncoding: "ieee-p1363" }, signature));
  } finally {
    await backend.close();
  }
}

/** Collects what the module writes to stderr while `run` runs, with debug logging on. */
async function captureStderr(run: () => Promise<void>): Promise<string> {
  const original = process.stderr.write.bind(process.stderr);
  let captured = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    captured += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    return true;
  }) as typeof process.stderr.write;
  setDebug(true);
  try {
    await run();
  } finally {
    setDebug(false);
    process.stderr.write = original;
  }
  return captured;
}

test("jwtExpiry reads exp; StaticTokenCredential uses it, or a rolling hour for opaque tokens", async (t) => {
  const exp = Math.floor(Date.now() / 1000) + 1234;
  t.is(jwtExpiry(jwt({ exp })), exp * 1000);
  t.is(jwtExpiry("opaque-token"), undefined);
  t.is(jwtExpiry("a.b.c"), undefined);
  const fromJwt = await new StaticTokenCredential(jwt({ exp })).getToken(SCOPE);
  t.is(fromJwt.expiresOnTimestamp, exp * 1000);
  const before = Date.now();
  const opaque = await new StaticTokenCredential("opaque-token").getToken(SCOPE);
  t.is(opaque.token, "opaque-token");
  t.true(opaque.expiresOnTimestamp >= before + 3_600_000 && opaque.expiresOnTimestamp <= Date.now() + 3_600_000);
  await t.throwsAsync(new StaticTokenCredential(jwt({ exp: 1000 })).getToken(SCOPE), { name: "CredentialUnavailableError", message: /expired at 1970/ });
});

test("AZURE_CLI_ACCESS_TOKEN wins over azureauth.json and signs against the vault", async (t) => {
  const token = await managedIdentityToken(emu);
  const dir = tempDir();
  const authFile = writeAuthFile(dir, { tenant: emu.tenantId, appId: "app", password: "file-secret" });
  const credential = createCredential({ AZURE_CLI_ACCESS_TOKEN: token, AZURE_AUTH_LOCATION: authFile, HOME: dir });
  t.is((await credential.getToken(SCOPE))?.token, token);
  await signsWith(t, { AZURE_CLI_ACCESS_TOKEN: token, AZURE_AUTH_LOCATION: authFile, AZURE_AUTHORITY_HOST: "https://127.0.0.1:9", HOME: dir });
});

test("azureauth.json comes next: ClientSecretCredential against AZURE_AUTHORITY_HOST, trusted through ca_file", async (t) => {
  const dir = tempDir();
  const authFile = writeAuthFile(dir, { tenant: emu.tenantId, appId: "00000000-0000-0000-0000-000000000001", password: "s3cret-from-file" });
  const env = { AZURE_AUTH_LOCATION: authFile, AZURE_AUTHORITY_HOST: emu.url, HOME: dir };
  const credential = createCredential(env, { ca: buildCaList([emu.caFile], {}) });
  const token = await credential.getToken(SCOPE);
  t.truthy(token?.token);
  t.true(token!.expiresOnTimestamp > Date.now());
  await signsWith(t, env);
});

test("an expired AZURE_CLI_ACCESS_TOKEN falls through to azureauth.json", async (t) => {
  const dir = tempDir();
  const authFile = writeAuthFile(dir, { tenant: emu.tenantId, appId: "app-id", password: "pw" });
  const expired = jwt({ exp: Math.floor(Date.now() / 1000) - 10 });
  const credential = createCredential({ AZURE_CLI_ACCESS_TOKEN: expired, AZURE_AUTH_LOCATION: authFile, AZURE_AUTHORITY_HOST: emu.url, HOME: dir }, { ca: buildCaList([emu.caFile], {}) });
  const token = await credential.getToken(SCOPE);
  t.not(token?.token, expired);
  t.is(jwtExpiry(token!.token)! > Date.now(), true);
});

test("azureauth.json search order: AZURE_AUTH_LOCATION, then $XDG_CONFIG_HOME, then ~/.config", (t) => {
  const home = tempDir();
  const xdg = tempDir();
  mkdirSync(path.join(home, ".config", "azure-keyvault-pkcs11"), { recursive: true });
  mkdirSync(path.join(xdg, "azure-keyvault-pkcs11"), { recursive: true });
  writeAuthFile(path.join(home, ".config", "azure-keyvault-pkcs11"), { tenant: "t-home", appId: "a", password: "p" });
  writeAuthFile(path.join(xdg, "azure-keyvault-pkcs11"), { tenant: "t-xdg", appId: "a", password: "p" });
  const explicit = writeAuthFile(tempDir(), { tenantId: "t-explicit", clientId: "sdk-auth-spelling", clientSecret: "p" }, "sp.json");
  t.is(findAuthFile({ HOME: home, XDG_CONFIG_HOME: xdg, AZURE_AUTH_LOCATION: explicit })?.tenantId, "t-explicit");
  t.is(findAuthFile({ HOME: home, XDG_CONFIG_HOME: xdg, AZURE_AUTH_LOCATION: explicit })?.clientId, "sdk-auth-spelling");
  t.is(findAuthFile({ HOME: home, XDG_CONFIG_HOME: xdg })?.tenantId, "t-xdg");
  t.is(findAuthFile({ HOME: home })?.tenantId, "t-home");
  // Like the C++ module, a file that is not there is skipped.
  t.is(findAuthFile({ HOME: home, AZURE_AUTH_LOCATION: path.join(home, "absent.json") })?.tenantId, "t-home");
});

test("a broken azureauth.json is an error naming the file and field, not a silent fall-through", async (t) => {
  const dir = tempDir();
  const noPassword = writeAuthFile(dir, { tenant: "t", appId: "a" });
  const error = t.throws(() => findAuthFile({ AZURE_AUTH_LOCATION: noPassword, HOME: dir }), { instanceOf: AuthFileError });
  t.is(error?.message, `${noPassword}: the field 'password' is missing or empty`);
  const notJson = writeAuthFile(dir, "{tenant", "broken.json");
  t.throws(() => findAuthFile({ AZURE_AUTH_LOCATION: notJson, HOME: dir }), { instanceOf: AuthFileError, message: /invalid JSON/ });

  const backend = createVaultBackend(moduleConfig(emu), { env: { AZURE_AUTH_LOCATION: noPassword, HOME: dir } });
  const refused = await t.throwsAsync(backend.getKey(emu.url, "ec"), { instanceOf: VaultError });
  t.is(refused?.kind, "auth");
  t.regex(refused!.message, /the field 'password' is missing or empty/);
  await backend.close();
});

test.serial("DefaultAzureCredential last: managed identity through the emulator's identity endpoint", async (t) => {
  const saved = { IDENTITY_ENDPOINT: process.env.IDENTITY_ENDPOINT, IDENTITY_HEADER: process.env.IDENTITY_HEADER };
  process.env.IDENTITY_ENDPOINT = emu.identityEndpoint;
  process.env.IDENTITY_HEADER = emu.identityHeader;
  try {
    const home = tempDir();
    const log = await captureStderr(() => signsWith(t, { HOME: home }));
    t.regex(log, /credential: AZURE_CLI_ACCESS_TOKEN is not set/);
    t.regex(log, /credential: azureauth\.json unavailable: no credentials file found/);
    t.regex(log, /credential: using DefaultAzureCredential/);
    t.false(log.includes(emu.identityHeader), "the identity header is a secret");
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
});

test.serial("no credential at all: VaultError auth listing what was tried", async (t) => {
  const saved = process.env.AZURE_TOKEN_CREDENTIALS;
  // Only the environment credential, so the answer does not depend on this machine's network or tools.
  process.env.AZURE_TOKEN_CREDENTIALS = "EnvironmentCredential";
  try {
    const backend = createVaultBackend(moduleConfig(emu), { env: { HOME: tempDir() } });
    const error = await t.throwsAsync(backend.getKey(emu.url, "ec"), { instanceOf: VaultError });
    t.is(error?.kind, "auth");
    t.is(error?.code, "CredentialChainError");
    t.regex(error!.message, /tried azureauth\.json, DefaultAzureCredential/);
    t.regex(error!.message, /EnvironmentCredential is unavailable/);
    await backend.close();
  } finally {
    if (saved === undefined) delete process.env.AZURE_TOKEN_CREDENTIALS;
    else process.env.AZURE_TOKEN_CREDENTIALS = saved;
  }
});

test.serial("secrets and tokens never reach the debug log", async (t) => {
  const dir = tempDir();
  const password = "pa55word-that-must-not-leak";
  const authFile = writeAuthFile(dir, { tenant: emu.tenantId, appId: "app-id", password });
  const token = await managedIdentityToken(emu);
  const log = await captureStderr(async () => {
    await signsWith(t, { AZURE_AUTH_LOCATION: authFile, AZURE_AUTHORITY_HOST: emu.url, HOME: dir, AZURE_KEYVAULT_PKCS11_DEBUG: "sdk" });
    await signsWith(t, { AZURE_CLI_ACCESS_TOKEN: token, HOME: dir });
  });
  t.regex(log, /credential: using azureauth\.json/);
  t.regex(log, /credential: using AZURE_CLI_ACCESS_TOKEN/);
  t.regex(log, /sign key 'ec': ok in/);
  t.false(log.includes(password));
  t.false(log.includes(token));
  t.false(log.includes(token.split(".")[2]!), "not even the token's signature part");
});

function countingLink(name: string, behaviour: () => Promise<AccessToken | null>): { link: { name: string; create: () => TokenCredential }; calls: () => number; created: () => number } {
  let calls = 0;
  let created = 0;
  return {
    link: {
      name,
      create: () => {
        created++;
        return {
          getToken: () => {
            calls++;
            return behaviour();
          },
        };
      },
    },
    calls: () => calls,
    created: () => created,
  };
}

const aToken = (value: string): AccessToken => ({ token: value, expiresOnTimestamp: Date.now() + 3_600_000 });

test("chain: an unavailable link is tried once; the first working link is the only one used afterwards", async (t) => {
  const unavailable = countingLink("first", () => Promise.reject(new CredentialUnavailableError("not here")));
  const working = countingLink("second", () => Promise.resolve(aToken("from-second")));
  const never = countingLink("third", () => Promise.resolve(aToken("from-third")));
  const chain = new CachedChainCredential([unavailable.link, working.link, never.link]);
  for (let i = 0; i < 3; i++) t.is((await chain.getToken(SCOPE))?.token, "from-second");
  t.is(unavailable.calls(), 1);
  t.is(working.calls(), 3);
  t.is(working.created(), 1);
  t.is(never.created(), 0);
  t.is(chain.selectedLink, "second");
});

test("chain: a real failure stops the chain and is retried next time; all unavailable is CredentialChainError", async (t) => {
  let fail = true;
  const flaky = countingLink("flaky", () => (fail ? Promise.reject(new Error("invalid client secret")) : Promise.resolve(aToken("ok"))));
  const fallback = countingLink("fallback", () => Promise.resolve(aToken("fallback")));
  const chain = new CachedChainCredential([flaky.link, fallback.link]);
  await t.throwsAsync(chain.getToken(SCOPE), { message: "invalid client secret" });
  t.is(fallback.calls(), 0);
  fail = false;
  t.is((await chain.getToken(SCOPE))?.token, "ok");

  const none = new CachedChainCredential([countingLink("a", () => Promise.reject(new CredentialUnavailableError("no a"))).link]);
  const error = await t.throwsAsync(none.getToken(SCOPE), { instanceOf: CredentialChainError });
  t.deepEqual(error?.reasons, ["a: no a"]);
  await t.throwsAsync(none.getToken(SCOPE), { instanceOf: CredentialChainError });
});

test("token cache: concurrent callers share one request; a cached token is reused until its refresh time", async (t) => {
  let requests = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const source: TokenCredential = {
    async getToken() {
      requests++;
      await gate;
      return aToken(`token-${requests}`);
    },
  };
  const cache = new TokenCache(source, 10_000);
  const pending = Array.from({ length: 16 }, () => cache.getToken(SCOPE));
  release();
  const tokens = await Promise.all(pending);
  t.is(requests, 1);
  t.true(tokens.every((token) => token.token === "token-1"));
  t.is((await cache.getToken(SCOPE)).token, "token-1");
  t.is(requests, 1);
  // Another scope is another token.
  t.is((await cache.getToken("https://managedhsm.azure.net/.default")).token, "token-2");
  // A claims challenge bypasses the cached token.
  t.is((await cache.getToken(SCOPE, { claims: "{}" })).token, "token-3");
});

test("token cache: refreshes in the background before expiry, and synchronously once expired", async (t) => {
  let requests = 0;
  let lifetimeMs = 3_600_000;
  let refreshAfter: number | undefined = Date.now() - 1;
  const source: TokenCredential = {
    async getToken() {
      requests++;
      const token: AccessToken = { token: `token-${requests}`, expiresOnTimestamp: Date.now() + lifetimeMs };
      if (refreshAfter !== undefined) token.refreshAfterTimestamp = refreshAfter;
      return token;
    },
  };
  const cache = new TokenCache(source, 10_000);
  t.is((await cache.getToken(SCOPE)).token, "token-1");
  refreshAfter = undefined;
  // Past its refresh time but still valid: the old token is returned and a refresh starts.
  t.is((await cache.getToken(SCOPE)).token, "token-1");
  await new Promise((resolve) => setImmediate(resolve));
  t.is(requests, 2);
  t.is((await cache.getToken(SCOPE)).token, "token-2");

  // Expired: the caller waits for a new token.
  lifetimeMs = -1000;
  const short = new TokenCache(source, 10_000);
  t.is((await short.getToken(SCOPE)).token, "token-3");
  lifetimeMs = 3_600_000;
  t.is((await short.getToken(SCOPE)).token, "token-4");
});
