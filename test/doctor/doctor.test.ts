// `azure-keyvault-pkcs11 doctor --json`, run as the built CLI against the emulator: one run per fault, each of which
// must name the slot, the cause and the fix and make the exit status 1, and one run where everything is fine.
import test from "ava";
import { connectProxy } from "../vault/connect-proxy.ts";
import { mkdtemp, mkdir, writeFile } from "node:fs/promises";
import { X509Certificate } from "node:crypto";
import { get as httpGet } from "node:http";
import path from "node:path";
import { API, modulePath, repoRoot, startModuleFixture, type ModuleFixture } from "../module/harness.ts";
import { describe, freeLoopbackPort, run, type RunResult } from "../clients/process.ts";
import type { CheckResult } from "../../src/doctor/report.ts";

const cli = path.join(repoRoot, "build", "cli.cjs");
let fixture: ModuleFixture;

test.before(async () => {
  const now = Math.floor(Date.now() / 1000);
  fixture = await startModuleFixture({
    keys: "rsa:RSA:2048,ec:EC:P-256,other:RSA:2048",
    certs: ["rsa", "ec", "other"],
    skipInitialize: true,
    prepare: async (_emulator, { vaultPost }) => {
      const made: Array<[string, Record<string, unknown>]> = [
        ["disabled", { kty: "EC", crv: "P-256", attributes: { enabled: false } }],
        ["verify-only", { kty: "EC", crv: "P-256", key_ops: ["verify"] }],
        ["expired", { kty: "EC", crv: "P-256", attributes: { exp: now - 3600 } }],
      ];
      for (const [name, body] of made) {
        const created = await vaultPost(`/keys/${name}/create?${API}`, body);
        if (created.status !== 200) throw new Error(`create ${name}: ${created.status} ${JSON.stringify(created.body)}`);
      }
      return made.map(([name]) => name);
    },
  });
});
test.after.always(() => fixture?.close());

interface DoctorRun {
  result: RunResult;
  checks: CheckResult[];
  /** The checks of one slot, or the ones about no slot. */
  of(slot: string | undefined): CheckResult[];
  find(check: string, slot?: string): CheckResult | undefined;
}

let runs = 0;

/** Writes `config` (unless it is a string: the file's raw text) and runs the doctor with its own HOME. */
async function doctor(config: unknown, env: Record<string, string | undefined> = {}, registerModule = false): Promise<DoctorRun> {
  const home = await mkdtemp(path.join(fixture.dir, `home-${runs++}-`));
  const configPath = path.join(home, "config.json");
  await writeFile(configPath, typeof config === "string" ? config : JSON.stringify(config));
  if (registerModule) {
    await mkdir(path.join(home, ".config", "pkcs11", "modules"), { recursive: true });
    await writeFile(path.join(home, ".config", "pkcs11", "modules", "azure-keyvault-pkcs11.module"), `module: ${modulePath}\n`);
  }
  const childEnv: NodeJS.ProcessEnv = { ...process.env, HOME: home, AZURE_KEYVAULT_PKCS11_CONFIG: configPath, XDG_CONFIG_HOME: undefined };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  delete childEnv.XDG_CONFIG_HOME;
  const result = await run(process.execPath, [cli, "doctor", "--json"], { env: childEnv, timeoutMs: 90_000 });
  let checks: CheckResult[] = [];
  try {
    checks = JSON.parse(result.stdout) as CheckResult[];
  } catch {
    throw new Error(`doctor --json printed no JSON\n${describe(result)}`);
  }
  return {
    result,
    checks,
    of: (slot) => checks.filter((check) => check.slot === slot),
    find: (check, slot) => checks.find((entry) => entry.check === check && entry.slot === slot),
  };
}

const slot = (keyName: string, extra: Record<string, unknown> = {}) => ({ key_name: keyName, label: keyName, vault_url: fixture.emulator.url, ...extra });

/** The check must exist and have failed, with a fix. */
function failed(t: import("ava").ExecutionContext, doctorRun: DoctorRun, check: string, slotLabel: string | undefined): CheckResult {
  const found = doctorRun.find(check, slotLabel);
  t.truthy(found, `no '${check}' check for slot ${slotLabel}\n${describe(doctorRun.result)}`);
  t.is(found?.verdict, "FAIL", describe(doctorRun.result));
  t.truthy(found?.fix, describe(doctorRun.result));
  t.is(doctorRun.result.code, 1, describe(doctorRun.result));
  return found!;
}

test("all green: every check is ok, the exit status is 0, and no token is printed", async (t) => {
  const doctorRun = await doctor({ slots: [slot("rsa"), slot("ec")] }, {}, true);
  const { result, checks } = doctorRun;
  t.is(result.code, 0, describe(result));
  t.deepEqual(
    checks.filter((check) => check.verdict !== "ok"),
    [],
    describe(result),
  );
  for (const label of ["rsa", "ec"]) {
    for (const name of ["key", "key state", "key_ops", "sign", "certificate", "tenant"]) t.truthy(doctorRun.find(name, label), `${name} of ${label}\n${describe(result)}`);
  }
  for (const name of ["proxy", "dns", "tcp", "tls", "vault endpoint", "clock"]) t.truthy(doctorRun.find(name, "rsa"), name);
  // The second slot on the same vault gets one line instead of the whole road again.
  t.truthy(doctorRun.find("network", "ec"));
  const links = checks.filter((check) => check.check === "credential link").map((check) => check.detail);
  t.regex(links[0] ?? "", /^AZURE_CLI_ACCESS_TOKEN: not set/);
  t.regex(links[1] ?? "", /^azureauth\.json: not available/);
  t.regex(links[2] ?? "", /^DefaultAzureCredential: chosen/);
  const credential = doctorRun.find("credential");
  t.regex(credential?.detail ?? "", new RegExp(`tenant ${fixture.emulator.tenantId}\\b`));
  t.regex(credential?.detail ?? "", /expires \d{4}-\d\d-\d\dT/);
  t.regex(doctorRun.find("sign", "rsa")?.detail ?? "", /RS256.*verifies/);
  t.regex(doctorRun.find("sign", "ec")?.detail ?? "", /ES256.*verifies/);
  t.is(doctorRun.find("module file")?.detail, modulePath);
  t.regex(doctorRun.find("p11-kit")?.detail ?? "", /registered by .*azure-keyvault-pkcs11\.module/);
  t.notRegex(result.stdout + result.stderr, /eyJ[A-Za-z0-9_-]{8,}\./, "a JWT reached the output");
});

test("a bad config: the field, and no vault checks", async (t) => {
  // No key_name and no vault_url: neither a per-key slot nor a vault token.
  const doctorRun = await doctor({ slots: [{ label: "nameless" }] });
  const config = failed(t, doctorRun, "config", undefined);
  t.regex(config.detail, /slots\[0\]\.key_name: is required: set key_name for one key's slot, or vault_url for a vault token/);
  t.regex(config.fix ?? "", /slots\[0\]\.key_name/);
  t.falsy(doctorRun.checks.find((check) => check.check === "tcp" || check.check === "credential"));
  // The module file is still checked, and without a registration in this HOME p11-kit gets a warning with its fix.
  t.is(doctorRun.find("p11-kit")?.verdict, "warn");
  t.regex(doctorRun.find("p11-kit")?.fix ?? "", /module: .*azure-keyvault-pkcs11\.so/);
});

test("invalid JSON: the line and column", async (t) => {
  const doctorRun = await doctor('{"slots": [ {"key_name": "rsa",, } ]}');
  const config = failed(t, doctorRun, "config", undefined);
  t.regex(config.detail, /line 1, column \d+: invalid JSON/);
  t.regex(config.fix ?? "", /JSON syntax/);
});

test("an unknown key", async (t) => {
  const doctorRun = await doctor({ slots: [slot("rsa"), { key_name: "no-such-key", label: "missing", vault_url: fixture.emulator.url }] });
  const key = failed(t, doctorRun, "key", "missing");
  t.regex(key.detail, /key 'no-such-key' in .* does not exist/);
  t.regex(key.fix ?? "", /key_name of slots\[1\]/);
  t.is(doctorRun.find("sign", "rsa")?.verdict, "ok", "the other slot is still checked");
});

test("a disabled key", async (t) => {
  const doctorRun = await doctor({ slots: [slot("disabled")] });
  const state = failed(t, doctorRun, "key state", "disabled");
  t.regex(state.detail, /disabled/);
  t.regex(state.fix ?? "", /--enabled true/);
});

test("key_ops without sign", async (t) => {
  const doctorRun = await doctor({ slots: [slot("verify-only")] });
  const ops = failed(t, doctorRun, "key_ops", "verify-only");
  t.regex(ops.detail, /^verify: no sign/);
  t.regex(ops.fix ?? "", /--ops sign/);
  // The vault itself confirms it with a refusal.
  const sign = failed(t, doctorRun, "sign", "verify-only");
  t.regex(sign.detail, /refused a test signature with verify-only \(403\): .*not permitted/);
});

test("a 403 refusal of the test signature", async (t) => {
  const doctorRun = await doctor({ slots: [slot("expired")] });
  const sign = failed(t, doctorRun, "sign", "expired");
  t.regex(sign.detail, /the vault refused a test signature with expired \(403\): .*expired key/);
  t.regex(sign.fix ?? "", /nbf\/exp/);
  const state = failed(t, doctorRun, "key state", "expired");
  t.regex(state.detail, /expired at \d{4}-/);
  t.regex(state.fix ?? "", /--expires/);
});

test("an unreachable vault: TCP fails, and the slot's key checks are not run", async (t) => {
  const port = await freeLoopbackPort();
  const doctorRun = await doctor({ slots: [slot("rsa", { label: "gone", vault_url: `https://127.0.0.1:${port}/` })] });
  const tcp = failed(t, doctorRun, "tcp", "gone");
  t.regex(tcp.detail, new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port} .*ECONNREFUSED`));
  t.regex(tcp.fix ?? "", /firewall/);
  t.falsy(doctorRun.find("key", "gone"));
});

test("an untrusted TLS certificate without NODE_EXTRA_CA_CERTS; ca_file in config.json fixes it", async (t) => {
  const untrusted = await doctor({ slots: [slot("rsa")] }, { NODE_EXTRA_CA_CERTS: undefined });
  const tls = failed(t, untrusted, "tls", "rsa");
  t.regex(tls.detail, /issued by azure-keyvault-pkcs11 emulator CA\) is not trusted: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/);
  t.regex(tls.fix ?? "", /ca_file.*NODE_EXTRA_CA_CERTS/);
  t.falsy(untrusted.find("sign", "rsa"));

  // The same trust list as the module: its ca_file makes the handshake, and the signature, work.
  const trusted = await doctor({ ca_file: fixture.emulator.caFile, slots: [slot("rsa")] }, { NODE_EXTRA_CA_CERTS: undefined });
  t.is(trusted.find("tls", "rsa")?.verdict, "ok", describe(trusted.result));
  t.is(trusted.find("sign", "rsa")?.verdict, "ok", describe(trusted.result));
});

test("a certificate_path holding another key's certificate", async (t) => {
  const other = fixture.key("other").certificateDer!;
  const pemPath = path.join(fixture.dir, "other.pem");
  await writeFile(pemPath, new X509Certificate(other).toString());
  const doctorRun = await doctor({ slots: [slot("rsa", { label: "mixed", certificate_path: pemPath })] });
  const certificate = failed(t, doctorRun, "certificate", "mixed");
  t.regex(certificate.detail, /subject CN=other\) is for another key/);
  t.regex(certificate.fix ?? "", /certificate_path .* of slots\[0\]/);
  t.is(doctorRun.find("sign", "mixed")?.verdict, "ok", "the key itself is fine");
});

test("a broken azureauth.json stops the chain; an expired AZURE_CLI_ACCESS_TOKEN is passed over with a warning", async (t) => {
  const authFile = path.join(fixture.dir, "broken-azureauth.json");
  await writeFile(authFile, '{"tenant": ');
  const broken = await doctor({ slots: [slot("rsa")] }, { AZURE_AUTH_LOCATION: authFile });
  const link = broken.checks.find((check) => check.check === "credential link" && check.verdict === "FAIL");
  t.regex(link?.detail ?? "", /^azureauth\.json \(.*broken-azureauth\.json\): failed, and the chain stops here: .*invalid JSON/, describe(broken.result));
  t.is(broken.find("credential")?.verdict, "FAIL");
  t.falsy(broken.find("sign", "rsa"), "no vault call without a credential");
  t.is(broken.result.code, 1);

  const claims = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) - 60, tid: "someone-else" })).toString("base64url");
  const expired = await doctor({ slots: [slot("rsa")] }, { AZURE_CLI_ACCESS_TOKEN: `eyJhbGciOiJub25lIn0.${claims}.x` });
  const first = expired.checks.find((check) => check.check === "credential link");
  t.is(first?.verdict, "warn", describe(expired.result));
  t.regex(first?.detail ?? "", /^AZURE_CLI_ACCESS_TOKEN: set but not usable, skipped: .*expired/);
  t.regex(expired.find("credential")?.detail ?? "", /^token from DefaultAzureCredential/);
  t.is(expired.result.code, 0, describe(expired.result));
});

test("a token of another tenant: the tenant check names both, and the vault refuses the token", async (t) => {
  const claims = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, tid: "another-tenant" })).toString("base64url");
  const doctorRun = await doctor({ slots: [slot("rsa")] }, { AZURE_CLI_ACCESS_TOKEN: `eyJhbGciOiJub25lIn0.${claims}.x` });
  t.regex(doctorRun.find("credential")?.detail ?? "", /^token from AZURE_CLI_ACCESS_TOKEN .*tenant another-tenant/, describe(doctorRun.result));
  const tenant = failed(t, doctorRun, "tenant", "rsa");
  t.regex(tenant.detail, new RegExp(`tenant another-tenant, but .* belongs to tenant ${fixture.emulator.tenantId}`));
  t.regex(tenant.fix ?? "", new RegExp(`az login --tenant ${fixture.emulator.tenantId}`));
  const key = failed(t, doctorRun, "key", "rsa");
  t.regex(key.detail, /401|authenticate/);
});

/** A managed-identity token from the emulator (as test/module/harness.ts gets its own, which it does not export). */
function identityToken(): Promise<string> {
  const { identityEndpoint, identityHeader } = fixture.emulator;
  return new Promise((resolve, reject) => {
    httpGet(`${identityEndpoint}?api-version=2019-08-01&resource=${encodeURIComponent("https://vault.azure.net")}`, { headers: { "X-IDENTITY-HEADER": identityHeader } }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => (response.statusCode === 200 ? resolve((JSON.parse(body) as { access_token: string }).access_token) : reject(new Error(body))));
    }).on("error", reject);
  });
}

test("a proxy: NO_PROXY as the SDK matches it; without a match the vault is reached and signs through the proxy, as the module does", async (t) => {
  const deadProxy = `http://proxy-user:proxy-s3cret@127.0.0.1:${await freeLoopbackPort()}`;
  const exempt = await doctor({ slots: [slot("rsa")] }, { HTTPS_PROXY: deadProxy, NO_PROXY: "example.com, 127.0.0.1" });
  t.is(exempt.find("proxy", "rsa")?.verdict, "ok", describe(exempt.result));
  t.regex(exempt.find("proxy", "rsa")?.detail ?? "", /NO_PROXY entry '127\.0\.0\.1' matches/);

  const proxyServer = await connectProxy("proxy-user:proxy-s3cret");
  t.teardown(() => proxyServer.close());
  const withCredentials = proxyServer.url.replace("http://", "http://proxy-user:proxy-s3cret@");
  const proxied = await doctor({ slots: [slot("rsa")] }, { HTTPS_PROXY: withCredentials, NO_PROXY: ".example.com" });
  const proxy = proxied.find("proxy", "rsa");
  t.is(proxy?.verdict, "ok", describe(proxied.result));
  t.regex(proxy?.detail ?? "", /reached through .* a CONNECT tunnel/);
  t.regex(proxied.find("tcp", "rsa")?.detail ?? "", /the proxy for 127\.0\.0\.1/);
  t.is(proxied.find("sign", "rsa")?.verdict, "ok", describe(proxied.result));
  t.is(proxied.result.code, 0, describe(proxied.result));
  const vaultPort = new URL(fixture.emulator.url).port;
  t.true(proxyServer.tunnels.some((target) => target === `127.0.0.1:${vaultPort}`), `tunnels: ${proxyServer.tunnels.join(", ")}`);

  const dead = await doctor({ slots: [slot("rsa")] }, { HTTPS_PROXY: deadProxy, NO_PROXY: ".example.com", AZURE_CLI_ACCESS_TOKEN: await identityToken() });
  t.is(dead.find("tcp", "rsa")?.verdict, "FAIL", describe(dead.result));
  t.regex(dead.find("tcp", "rsa")?.detail ?? "", /cannot connect to the proxy/);
  t.not(dead.result.code, 0);
  t.false(`${exempt.result.stdout}${proxied.result.stdout}${dead.result.stdout}`.includes("proxy-s3cret"), "the proxy's password reached the output");
});

