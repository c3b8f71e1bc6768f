// Challenge authentication, the token endpoints, and the real @azure/identity credentials against them.
import test from "ava";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { KeyClient } from "@azure/keyvault-keys";
import { ManagedIdentityCredential } from "@azure/identity";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw } from "./raw.ts";

let emulator: TestEmulator;
let other: TestEmulator;

test.before(async () => {
  [emulator, other] = await Promise.all([
    startTestEmulator({ keys: "rsa-key:RSA:2048", tenantId: "11111111-2222-3333-4444-555555555555", tokenLifetimeSeconds: 2 }),
    startTestEmulator({ keys: "rsa-key:RSA:2048" }),
  ]);
});
test.after.always(async () => {
  await Promise.all([emulator?.close(), other?.close()]);
});

const keyUrl = () => `${emulator.url}/keys/rsa-key?api-version=2025-07-01`;

test("a request without a token gets Key Vault's 401 challenge", async (t) => {
  const res = await raw(keyUrl(), { ca: emulator.caPem });
  t.is(res.status, 401);
  t.is(res.headers["www-authenticate"], 'Bearer authorization="https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555", resource="https://vault.azure.net"');
  t.deepEqual(res.json, { error: { code: "Unauthorized", message: "AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token." } });
});

test("a token from another emulator is refused with 401", async (t) => {
  const foreign = await managedIdentityToken(other);
  const res = await raw(keyUrl(), { ca: emulator.caPem, headers: { authorization: `Bearer ${foreign}` } });
  t.is(res.status, 401);
  t.is(res.json.error.code, "Unauthorized");
  t.truthy(res.headers["www-authenticate"]);
  // The same token works where it was issued.
  const home = await raw(`${other.url}/keys/rsa-key?api-version=2025-07-01`, { ca: other.caPem, headers: { authorization: `Bearer ${foreign}` } });
  t.is(home.status, 200);
});

test("malformed tokens and a token for another audience are refused", async (t) => {
  for (const header of ["Bearer not-a-jwt", "Bearer a.b.c", "Basic dXNlcjpwYXNz"]) {
    const res = await raw(keyUrl(), { ca: emulator.caPem, headers: { authorization: header } });
    t.is(res.status, 401, header);
  }
  const storageToken = await managedIdentityToken(emulator, "https://storage.azure.com");
  const res = await raw(keyUrl(), { ca: emulator.caPem, headers: { authorization: `Bearer ${storageToken}` } });
  t.is(res.status, 401);
  t.regex(res.json.error.message, /Invalid audience/);
});

test("an expired token is refused", async (t) => {
  const token = await managedIdentityToken(emulator);
  const fresh = await raw(keyUrl(), { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
  t.is(fresh.status, 200);
  await new Promise((r) => setTimeout(r, 3100));
  const stale = await raw(keyUrl(), { ca: emulator.caPem, headers: { authorization: `Bearer ${token}` } });
  t.is(stale.status, 401);
  t.regex(stale.json.error.message, /expired/);
});

test("the managed-identity endpoint checks X-IDENTITY-HEADER and api-version", async (t) => {
  const base = `${emulator.identityEndpoint}?api-version=2019-08-01&resource=https://vault.azure.net`;
  t.is((await raw(base)).status, 401);
  t.is((await raw(base, { headers: { "X-IDENTITY-HEADER": "wrong" } })).status, 401);
  t.is((await raw(`${emulator.identityEndpoint}?api-version=2017-09-01&resource=x`, { headers: { "X-IDENTITY-HEADER": emulator.identityHeader } })).status, 400);
  t.is((await raw(`${emulator.identityEndpoint}?api-version=2019-08-01`, { headers: { "X-IDENTITY-HEADER": emulator.identityHeader } })).status, 400);
  const ok = await raw(base, { headers: { "X-IDENTITY-HEADER": emulator.identityHeader } });
  t.is(ok.status, 200);
  t.is(ok.json.token_type, "Bearer");
  t.is(ok.json.resource, "https://vault.azure.net");
  t.true(Number(ok.json.expires_on) > Date.now() / 1000);
});

test("the client-credentials endpoint validates its form", async (t) => {
  const url = `${emulator.url}/${emulator.tenantId}/oauth2/v2.0/token`;
  const post = (form: string) => raw(url, { ca: emulator.caPem, method: "POST", body: form, headers: { "content-type": "application/x-www-form-urlencoded" } });
  t.is((await post("grant_type=client_credentials&client_id=a&scope=https%3A%2F%2Fvault.azure.net%2F.default")).status, 401);
  t.is((await post("grant_type=password&client_id=a&client_secret=b&scope=x/.default")).status, 400);
  const ok = await post("grant_type=client_credentials&client_id=a&client_secret=b&scope=https%3A%2F%2Fvault.azure.net%2F.default");
  t.is(ok.status, 200);
  const use = await raw(keyUrl(), { ca: emulator.caPem, headers: { authorization: `Bearer ${ok.json.access_token}` } });
  t.is(use.status, 200);
});

test("ClientSecretCredential (authorityHost = emulator) gets a token the KeyClient then uses", async (t) => {
  const client = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
  const key = await client.getKey("rsa-key");
  t.is(key.name, "rsa-key");
  t.is(key.keyType, "RSA");
});

test("ManagedIdentityCredential reads IDENTITY_ENDPOINT/IDENTITY_HEADER and the KeyClient uses its token", async (t) => {
  // This test file runs in its own process, so setting the App Service variables here affects nothing else.
  process.env.IDENTITY_ENDPOINT = emulator.identityEndpoint;
  process.env.IDENTITY_HEADER = emulator.identityHeader;
  const client = new KeyClient(emulator.url, new ManagedIdentityCredential(), emulator.clientOptions);
  const key = await client.getKey("rsa-key");
  t.is(key.keyType, "RSA");
});

function runChild(env: Record<string, string>, mode: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = fileURLToPath(new URL("./credential-child.ts", import.meta.url));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import=tsx", script, mode], { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("DefaultAzureCredential in a child process, trusting the CA only through NODE_EXTRA_CA_CERTS", async (t) => {
  const result = await runChild(emulator.env, "default");
  t.is(result.code, 0, result.stderr);
  t.is(JSON.parse(result.stdout).kty, "RSA");
});

test("without NODE_EXTRA_CA_CERTS the child cannot reach the emulator (TLS is really checked)", async (t) => {
  const { NODE_EXTRA_CA_CERTS: _ignored, ...env } = emulator.env;
  const result = await runChild(env, "default");
  t.not(result.code, 0);
  t.regex(result.stderr, /certificate|self.signed|UNABLE_TO|issuer/i);
});

test("ClientSecretCredential in a child process with authorityHost pointed at the emulator", async (t) => {
  const result = await runChild(
    { ...emulator.env, AZURE_TENANT_ID: emulator.tenantId, AZURE_CLIENT_ID: "child-app", AZURE_CLIENT_SECRET: "child-secret", AZURE_AUTHORITY_HOST: emulator.url },
    "client-secret",
  );
  t.is(result.code, 0, result.stderr);
  t.is(JSON.parse(result.stdout).kty, "RSA");
});
