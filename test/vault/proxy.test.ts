// Vault requests through an HTTP CONNECT proxy: HTTPS_PROXY (from the backend's env, as in an agent context) sends
// every vault connection through a tunnel, with the module's trust list and keep-alive on the TLS inside it, proxy
// credentials from the URL, and NO_PROXY exempting hosts with the Azure SDK's rules.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpsServer, request } from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { createSecureContext } from "node:tls";
import test from "ava";
import { createCredential } from "../../src/auth/index.ts";
import { setDebug, withLogSink } from "../../src/log/log.ts";
import { proxyDecision, TunnelAgent } from "../../src/vault/proxy.ts";
import { createVaultBackend, VaultError, type VaultBackend } from "../../src/vault/index.ts";
import { connectProxy } from "./connect-proxy.ts";
import { emulator, managedIdentityToken, moduleConfig, publicKeyOf, type RunningEmulator } from "./helpers.ts";

let emu: RunningEmulator;
let token: string;
let emuHostPort: string;

test.before(async () => {
  emu = await emulator({ keys: "rsa2048:RSA:2048,ec256:EC:P-256" });
  token = await managedIdentityToken(emu);
  emuHostPort = new URL(emu.url).host;
  setDebug(true);
});

test.after.always(async () => {
  setDebug(false);
  await emu?.close();
});

/** A backend whose env (not process.env, which has no proxy variables here) carries `env`. */
function backendWith(env: NodeJS.ProcessEnv, caFiles = [emu.caFile]): VaultBackend {
  const credential = createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" });
  return createVaultBackend(moduleConfig(emu, { caFiles }), { credential, env: { HOME: "/nonexistent", ...env } });
}

/** Gets the key, signs `count` digests, and checks every signature with node:crypto against the key's JWK. */
async function signAndVerify(t: import("ava").ExecutionContext, backend: VaultBackend, keyName: string, count: number): Promise<void> {
  const key = await backend.getKey(emu.url, keyName);
  const publicKey = publicKeyOf(key);
  for (let i = 0; i < count; i++) {
    const message = randomBytes(64);
    const digest = createHash("sha256").update(message).digest();
    const ec = key.kty.startsWith("EC");
    const signature = await backend.sign(key, ec ? "ES256" : "RS256", digest);
    const verifyKey = ec ? { key: publicKey, dsaEncoding: "ieee-p1363" as const } : publicKey;
    t.true(verify("sha256", message, verifyKey, signature), `signature ${i} verifies`);
    t.false(verify("sha256", Buffer.concat([message, Buffer.from([0])]), verifyKey, signature), "and not for another message");
  }
}

function capture(): { lines: string[]; run<T>(task: () => Promise<T>): Promise<T> } {
  const lines: string[] = [];
  return {
    lines,
    run: (task) =>
      withLogSink((line) => {
        lines.push(line);
        return true;
      }, task),
  };
}

test.serial("HTTPS_PROXY with credentials: every vault connection is a tunnel to the vault, reused, trust list intact", async (t) => {
  const proxy = await connectProxy("pkcs11 user:s3cr%t");
  const backend = backendWith({ HTTPS_PROXY: proxy.url.replace("//", `//${encodeURIComponent("pkcs11 user")}:${encodeURIComponent("s3cr%t")}@`) });
  const log = capture();
  try {
    await log.run(async () => {
      await signAndVerify(t, backend, "rsa2048", 4);
      await signAndVerify(t, backend, "ec256", 4);
    });
  } finally {
    await backend.close();
    await proxy.close();
  }
  t.true(proxy.tunnels.length > 0, "the vault was reached through the proxy");
  t.deepEqual([...new Set(proxy.tunnels)], [emuHostPort], "only to the vault's host:port");
  // 2 key reads and 8 signatures, one after the other: keep-alive carries them all over one tunnel.
  t.true(proxy.tunnels.length <= 2, `keep-alive inside the tunnel (${proxy.tunnels.length} tunnels)`);
  t.is(proxy.refused, 0);
  const text = log.lines.join("");
  t.regex(text, new RegExp(`through the proxy 127\\.0\\.0\\.1:${new URL(proxy.url).port} \\(HTTPS_PROXY\\)`));
  t.false(/s3cr|pkcs11 user|pkcs11%20user/.test(text), "the proxy's credentials are never logged");
});

test.serial("through the proxy, the vault's certificate is still verified: without the emulator's CA, no connection", async (t) => {
  const proxy = await connectProxy();
  const backend = backendWith({ HTTPS_PROXY: proxy.url }, []);
  try {
    const error = await t.throwsAsync(backend.getKey(emu.url, "rsa2048"), { instanceOf: VaultError });
    t.is(error?.kind, "network");
    t.regex(error?.message ?? "", /SELF_SIGNED|UNABLE_TO|certificate/i);
  } finally {
    await backend.close();
    await proxy.close();
  }
  t.true(proxy.tunnels.length > 0, "the failure happened inside the tunnel");
});

test.serial("lower-case https_proxy, and ALL_PROXY / HTTP_PROXY as fall-backs, as the SDK reads them", async (t) => {
  for (const variable of ["https_proxy", "ALL_PROXY", "http_proxy"]) {
    const proxy = await connectProxy();
    const backend = backendWith({ [variable]: proxy.url });
    try {
      await signAndVerify(t, backend, "ec256", 1);
    } finally {
      await backend.close();
      await proxy.close();
    }
    t.deepEqual([...new Set(proxy.tunnels)], [emuHostPort], `${variable} carries the vault's requests`);
  }
});

test.serial("NO_PROXY naming the vault's host: direct connections, no tunnel", async (t) => {
  const proxy = await connectProxy();
  const backend = backendWith({ HTTPS_PROXY: proxy.url, NO_PROXY: `example.com, ${new URL(emu.url).hostname}` });
  try {
    await signAndVerify(t, backend, "rsa2048", 2);
  } finally {
    await backend.close();
    await proxy.close();
  }
  t.deepEqual(proxy.tunnels, []);
});

test.serial("wrong proxy credentials: a network VaultError naming the proxy's 407, not the proxy's answer as the vault's", async (t) => {
  const proxy = await connectProxy("user:right");
  const backend = backendWith({ HTTPS_PROXY: proxy.url.replace("//", "//user:wrong@") });
  try {
    const error = await t.throwsAsync(backend.getKey(emu.url, "rsa2048"), { instanceOf: VaultError });
    t.is(error?.kind, "network");
    t.regex(error?.message ?? "", new RegExp(`the proxy 127\\.0\\.0\\.1:${new URL(proxy.url).port} refused a tunnel to ${emuHostPort.replace(/\./g, "\\.")}: 407 Proxy Authentication Required`));
    t.false(error?.message.includes("wrong"), "the proxy's password is not in the message");
  } finally {
    await backend.close();
    await proxy.close();
  }
  t.true(proxy.refused > 0);
  t.deepEqual(proxy.tunnels, []);
});

test.serial("a proxy variable that is not an http(s) URL: a VaultError naming the variable, not its value", async (t) => {
  for (const value of ["secret-user:pw@proxy", "socks5://secret-user:pw@127.0.0.1:1080"]) {
    const backend = backendWith({ https_proxy: value });
    try {
      const error = await t.throwsAsync(backend.getKey(emu.url, "rsa2048"), { instanceOf: VaultError });
      t.regex(error?.message ?? "", /^https_proxy is not an http:\/\/ or https:\/\/ proxy URL/);
      t.false(error?.message.includes("secret-user"));
    } finally {
      await backend.close();
    }
  }
});

test.serial("an IP vault through a proxy named by host name: its certificate is checked against the IP, not the proxy's name", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "akv-proxy-test-"));
  const proxy = await connectProxy();
  const server = createHttpsServer({}, (_request, response) => response.end("ok"));
  try {
    // A certificate for "localhost" only, served on 127.0.0.1, with the proxy reached as "localhost".
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
    const cert = readFileSync(path.join(dir, "cert.pem"), "utf8");
    server.setSecureContext({ key: readFileSync(path.join(dir, "key.pem")), cert });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const agent = new TunnelAgent(new URL(proxy.url.replace("127.0.0.1", "localhost")), createSecureContext({ ca: cert }), { keepAlive: false });
    const get = (hostname: string) =>
      new Promise<string>((resolve) => {
        const req = request({ hostname, port, path: "/", agent }, (response) => {
          response.resume();
          response.on("end", () => resolve(`status ${response.statusCode}`));
        });
        req.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
        req.end();
      });
    t.is(await get("127.0.0.1"), "ERR_TLS_CERT_ALTNAME_INVALID");
    t.is(await get("localhost"), "status 200", "the same trust accepts the name the certificate is for");
    t.is(proxy.tunnels.length, 2);
    agent.destroy();
  } finally {
    server.close();
    await proxy.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("proxyDecision mirrors the SDK's proxyPolicy rules", (t) => {
  const url = "https://myvault.vault.azure.net";
  // Upper case first, an empty value is unset, HTTPS_PROXY before ALL_PROXY before HTTP_PROXY.
  t.deepEqual(proxyDecision(url, {}), {});
  t.deepEqual(proxyDecision(url, { HTTPS_PROXY: "http://a:1", https_proxy: "http://b:1" }), { proxy: "http://a:1", variable: "HTTPS_PROXY" });
  t.deepEqual(proxyDecision(url, { HTTPS_PROXY: "", https_proxy: "http://b:1" }), { proxy: "http://b:1", variable: "https_proxy" });
  t.deepEqual(proxyDecision(url, { HTTP_PROXY: "http://c:1", all_proxy: "http://d:1" }), { proxy: "http://d:1", variable: "all_proxy" });
  t.deepEqual(proxyDecision(url, { HTTP_PROXY: "http://c:1" }), { proxy: "http://c:1", variable: "HTTP_PROXY" });
  const bypass = (noProxy: string, target = url) => proxyDecision(target, { HTTPS_PROXY: "http://p:1", NO_PROXY: noProxy }).bypassedBy;
  t.is(bypass("myvault.vault.azure.net"), "myvault.vault.azure.net");
  t.is(bypass(" other , .vault.azure.net"), ".vault.azure.net");
  t.is(bypass(".vault.azure.net", "https://vault.azure.net"), ".vault.azure.net", "a leading dot also matches the domain itself");
  t.is(bypass("vault.azure.net"), undefined, "no suffix match without the dot");
  t.is(bypass(".azure.net", "https://myvaultazure.net"), undefined);
  t.is(bypass("*"), undefined, "the SDK has no wildcard");
  t.is(bypass("myvault.vault.azure.net:443"), undefined, "nor ports");
  t.is(bypass("localhost", "https://127.0.0.1:8443"), undefined, "nor a loopback exemption");
  t.is(proxyDecision(url, { HTTPS_PROXY: "http://p:1", no_proxy: ".azure.net" }).bypassedBy, ".azure.net");
});
