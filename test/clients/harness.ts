// Shared fixture of the client tests: an emulated Key Vault holding an RSA 2048 and an EC P-256 key, each with a
// self-signed certificate, a config.json exposing them as two tokens, and the environment a client program needs to
// load build/azure-keyvault-pkcs11.so against it. The public keys and certificates are fetched from the emulator over
// HTTPS with a managed-identity token, independently of the module, and every test verifies against those.
// `startClientFixture({ certificateUsage: "codeSigning" })` gives both certificates code signing as their only
// extended key usage, as a Secure Boot signing certificate created with such a policy on the real service has.
//
// AKV_CLIENT_TESTS_BACKEND=softhsm runs the same tests against SoftHSMv2 (a known-good module, apt package softhsm2)
// with locally generated keys; it exists to debug the test commands themselves and is not part of CI.
import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, freeLoopbackPort, run, startDaemon, waitFor, type Daemon, type RunOptions, type RunResult } from "./process.ts";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const modulePath = path.join(repoRoot, "build", "azure-keyvault-pkcs11.so");
export const libp11EnginePath = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";
const softhsmModulePath = "/usr/lib/softhsm/libsofthsm2.so";

export type KeyKind = "rsa" | "ec";

export interface ClientKey {
  kind: KeyKind;
  /** The key's name in the vault: CKA_LABEL of its private key, public key and certificate objects. */
  keyName: string;
  /** The slot label in config.json, which is the token label. */
  tokenLabel: string;
  /** From the vault's JWK, not from the module. */
  publicKey: KeyObject;
  publicKeyPem: string;
  publicKeyPath: string;
  /** The vault's certificate for the key, fetched from the emulator, not from the module. */
  certificate: X509Certificate;
  certificatePem: string;
  certificatePath: string;
  /** RFC 7512 URI of the private key: pkcs11:token=…;object=…;type=private */
  privateKeyUri: string;
  /** The private key URI with the PIN appended when the backend needs one (SoftHSM only). */
  privateKeyUriWithPin: string;
}

export interface ClientFixture {
  backend: "module" | "softhsm";
  /** Absolute path of the PKCS#11 module the clients load. */
  modulePath: string;
  /** A private temporary folder, removed by close(). */
  dir: string;
  /** Environment for client processes: credentials, CA, config file, HOME inside dir, LC_ALL=C. */
  env: NodeJS.ProcessEnv;
  rsa: ClientKey;
  ec: ClientKey;
  keys: ClientKey[];
  /** The user PIN, only for the SoftHSM backend; the Key Vault tokens need none. */
  pin?: string;
  /** With `vaultToken: true`: the vault token and the emulator's REST API. */
  vault?: VaultRest;
  file(name: string): string;
  run(file: string, args: readonly string[], options?: Partial<RunOptions>): Promise<RunResult>;
  /** Runs and throws with the full output unless the command exits 0. */
  runOk(file: string, args: readonly string[], options?: Partial<RunOptions>): Promise<RunResult>;
  /** Writes an OpenSSL config that loads the libp11 engine with this module; returns its path. */
  opensslEngineConfig(): Promise<string>;
  /** The certificate object the token shows for the key (CKA_LABEL = key name), read with pkcs11-tool. */
  tokenCertificate(key: ClientKey): Promise<X509Certificate>;
  close(): Promise<void>;
}

export interface ClientFixtureOptions {
  /**
   * "tls-and-code-signing" (default): the vault's certificates name clientAuth, serverAuth and codeSigning
   * (SoftHSM's also emailProtection).
   * "codeSigning": code signing only, which sbverify requires (it refuses a certificate that also names TLS usages,
   * and accepts one for S/MIME signing or whose only extended key usage is code signing).
   */
  certificateUsage?: "tls-and-code-signing" | "codeSigning";
  /**
   * Also a vault token: a third config.json slot `{ "vault_url": <emulator>, "label": "vault" }`, whose objects are
   * every key of the vault (issue #10), and `fixture.vault`, the emulator's REST API for the checks. Module backend
   * only.
   */
  vaultToken?: boolean;
  /** Permissions the emulator refuses with 403 ForbiddenByPolicy (its --deny), e.g. ["keys/create"]. */
  deny?: string[];
}

/** A key as the vault's REST API returns it, read independently of the module. */
export interface VaultKeyView {
  kid: string;
  /** The key's version: the last segment of its kid. */
  version: string;
  kty: string;
  /** RSA modulus bits, of the JWK's n. */
  modulusBits?: number;
  crv?: string;
  keyOps: string[];
  tags: Record<string, string>;
  /** From the JWK. */
  publicKey: KeyObject;
}

/** The emulator's REST API, with the fixture's own managed-identity token. */
export interface VaultRest {
  /** The vault token's label in config.json. */
  tokenLabel: string;
  url: string;
  /** GET /keys/{name}: the latest version, or undefined on 404. */
  key(name: string): Promise<VaultKeyView | undefined>;
  /** GET /deletedkeys/{name}: the deleted key bundle, or undefined on 404 (not deleted, or purged). */
  deletedKey(name: string): Promise<Record<string, unknown> | undefined>;
}

interface EmulatorInfo {
  url: string;
  identityEndpoint: string;
  identityHeader: string;
  caPem: string;
}

/** One request with a deadline; the body parsed as JSON when there is one. */
function httpsJson(url: string, headers: Record<string, string>, ca: string): Promise<{ status: number; body: unknown; text: string }> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith("http:") ? http.get : https.get;
    const request = get(url, { headers, ca, timeout: 15_000 }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown;
        try {
          body = text === "" ? undefined : JSON.parse(text);
        } catch (error) {
          reject(new Error(`GET ${url}: HTTP ${response.statusCode}, not JSON: ${(error as Error).message}`));
          return;
        }
        resolve({ status: response.statusCode ?? 0, body, text });
      });
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`GET ${url}: timed out`)));
    request.on("error", reject);
  });
}

async function httpsGetJson(url: string, headers: Record<string, string>, ca: string): Promise<unknown> {
  const { status, body, text } = await httpsJson(url, headers, ca);
  if (status !== 200) throw new Error(`GET ${url}: HTTP ${status}: ${text.slice(0, 500)}`);
  return body;
}

async function vaultAuthorization(emulator: EmulatorInfo): Promise<Record<string, string>> {
  const tokenUrl = new URL(emulator.identityEndpoint);
  tokenUrl.searchParams.set("resource", "https://vault.azure.net");
  tokenUrl.searchParams.set("api-version", "2019-08-01");
  const token = (await httpsGetJson(tokenUrl.toString(), { "X-IDENTITY-HEADER": emulator.identityHeader }, emulator.caPem)) as {
    access_token?: string;
  };
  if (typeof token.access_token !== "string") throw new Error("the emulator's identity endpoint returned no access_token");
  return { Authorization: `Bearer ${token.access_token}` };
}

/** The public key of a vault JWK (private members, key_ops and kid dropped; -HSM types are the same key types). */
function publicKeyOfJwk(key: Record<string, unknown>): KeyObject {
  const jwk: Record<string, unknown> = {};
  for (const field of ["kty", "n", "e", "crv", "x", "y"]) if (key[field] !== undefined) jwk[field] = key[field];
  if (jwk.kty === "RSA-HSM") jwk.kty = "RSA";
  if (jwk.kty === "EC-HSM") jwk.kty = "EC";
  return createPublicKey({ key: jwk as never, format: "jwk" });
}

function vaultRest(emulator: EmulatorInfo, tokenLabel: string): VaultRest {
  const base = emulator.url.replace(/\/+$/, "");
  // A token per check rather than one kept: a handful of token requests cost nothing and none can expire mid-run.
  const get = async (pathname: string) => httpsJson(`${base}${pathname}?api-version=7.5`, await vaultAuthorization(emulator), emulator.caPem);
  const okOrMissing = (what: string, reply: { status: number; text: string }): boolean => {
    if (reply.status === 404) return false;
    if (reply.status !== 200) throw new Error(`GET ${what}: HTTP ${reply.status}: ${reply.text.slice(0, 500)}`);
    return true;
  };
  return {
    tokenLabel,
    url: emulator.url,
    async key(name) {
      const reply = await get(`/keys/${encodeURIComponent(name)}`);
      if (!okOrMissing(`/keys/${name}`, reply)) return undefined;
      const bundle = reply.body as { key?: Record<string, unknown>; tags?: Record<string, string> };
      const jwk = bundle.key;
      if (!jwk || typeof jwk.kid !== "string" || typeof jwk.kty !== "string") throw new Error(`the vault returned no JWK for ${name}: ${reply.text}`);
      const view: VaultKeyView = {
        kid: jwk.kid,
        version: jwk.kid.split("/").pop() ?? "",
        kty: jwk.kty,
        keyOps: Array.isArray(jwk.key_ops) ? (jwk.key_ops as string[]) : [],
        tags: bundle.tags ?? {},
        publicKey: publicKeyOfJwk(jwk),
      };
      const bits = view.publicKey.asymmetricKeyDetails?.modulusLength;
      if (bits !== undefined) view.modulusBits = bits;
      if (typeof jwk.crv === "string") view.crv = jwk.crv;
      return view;
    },
    async deletedKey(name) {
      const reply = await get(`/deletedkeys/${encodeURIComponent(name)}`);
      return okOrMissing(`/deletedkeys/${name}`, reply) ? (reply.body as Record<string, unknown>) : undefined;
    },
  };
}

/** Reads a key's JWK and its certificate straight from the (emulated) vault REST API. */
async function fetchFromVault(emulator: EmulatorInfo, keyName: string): Promise<{ publicKey: KeyObject; certificate: X509Certificate }> {
  const authorization = await vaultAuthorization(emulator);
  const base = emulator.url.replace(/\/+$/, "");
  const key = (await httpsGetJson(`${base}/keys/${keyName}?api-version=7.5`, authorization, emulator.caPem)) as { key?: Record<string, unknown> };
  if (!key.key) throw new Error(`the vault returned no JWK for ${keyName}`);
  const publicKey = publicKeyOfJwk(key.key);
  const certificate = (await httpsGetJson(`${base}/certificates/${keyName}?api-version=7.5`, authorization, emulator.caPem)) as { cer?: string };
  if (typeof certificate.cer !== "string") throw new Error(`the vault returned no certificate for ${keyName}`);
  return { publicKey, certificate: new X509Certificate(Buffer.from(certificate.cer, "base64")) };
}

async function startEmulatorProcess(dir: string, env: NodeJS.ProcessEnv, certs: string, deny: readonly string[] = []): Promise<{ daemon: Daemon; info: EmulatorInfo }> {
  const cli = path.join(repoRoot, "build", "cli.cjs");
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` first`);
  const denyArgs = deny.length > 0 ? ["--deny", deny.join(",")] : [];
  const daemon = startDaemon(process.execPath, [cli, "emulator", "--port", "0", "--keys", "rsa-key:RSA:2048,ec-key:EC:P-256", "--certs", certs, ...denyArgs], {
    env,
    cwd: dir,
  });
  let ready: Record<string, unknown> | undefined;
  try {
    await waitFor(
      () => {
        const match = /^READY (\{.*\})\s*$/m.exec(daemon.output());
        if (match?.[1]) ready = JSON.parse(match[1]) as Record<string, unknown>;
        if (daemon.child.exitCode !== null) throw new Error(`the emulator exited early:\n${daemon.output()}`);
        return ready !== undefined;
      },
      30_000,
      "the emulator's READY line",
    );
  } catch (error) {
    await daemon.stop();
    throw error;
  }
  const info = ready as Record<string, unknown>;
  const caPem =
    typeof info.caPem === "string" ? info.caPem : typeof info.caFile === "string" ? await readFile(info.caFile, "utf8") : undefined;
  for (const field of ["url", "identityEndpoint", "identityHeader"]) {
    if (typeof info[field] !== "string") throw new Error(`the emulator's READY line lacks ${field}: ${JSON.stringify(info)}`);
  }
  if (caPem === undefined) throw new Error(`the emulator's READY line has neither caPem nor caFile: ${JSON.stringify(info)}`);
  return {
    daemon,
    info: { url: info.url as string, identityEndpoint: info.identityEndpoint as string, identityHeader: info.identityHeader as string, caPem },
  };
}

function baseEnv(dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: path.join(dir, "home"),
    LC_ALL: "C",
    TMPDIR: dir,
  };
  for (const name of ["AZURE_KEYVAULT_PKCS11_DEBUG", "AZURE_KEYVAULT_PKCS11_LOG_LEVEL", "AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS"]) {
    if (process.env[name] !== undefined) env[name] = process.env[name];
  }
  // AKV_CLIENT_TESTS_AGENT=1 runs every client through a shared agent of the fixture's own (docs/agent.md).
  if (process.env.AKV_CLIENT_TESTS_AGENT === "1") {
    env.AZURE_KEYVAULT_PKCS11_AGENT = "1";
    env.XDG_RUNTIME_DIR = path.join(dir, "run");
  } else {
    env.AZURE_KEYVAULT_PKCS11_AGENT = "0";
  }
  return env;
}

/** A client run; with the agent on, a client that fell back to a private helper is a failure of the run. */
async function runClient(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const result = await run(file, args, options);
  if (options.env.AZURE_KEYVAULT_PKCS11_AGENT === "1" && /cannot use the agent/.test(result.stderr)) {
    throw new Error(`${file} did not use the agent:\n${describe(result)}`);
  }
  return result;
}

/** Stops the fixture's agent, if its clients started one (it would otherwise idle out minutes later). */
async function stopAgent(env: NodeJS.ProcessEnv): Promise<void> {
  if (!env.XDG_RUNTIME_DIR) return;
  let pid: number;
  try {
    pid = Number((await readFile(path.join(env.XDG_RUNTIME_DIR, "azure-keyvault-pkcs11", "agent.pid"), "utf8")).trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function makeKey(kind: KeyKind, keyName: string, tokenLabel: string, dir: string, publicKey: KeyObject, certificate: X509Certificate, pin?: string): ClientKey {
  const privateKeyUri = `pkcs11:token=${tokenLabel};object=${keyName};type=private`;
  return {
    kind,
    keyName,
    tokenLabel,
    publicKey,
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    publicKeyPath: path.join(dir, `${keyName}.pub.pem`),
    certificate,
    certificatePem: certificate.toString(),
    certificatePath: path.join(dir, `${keyName}.crt.pem`),
    privateKeyUri,
    privateKeyUriWithPin: pin === undefined ? privateKeyUri : `${privateKeyUri};pin-value=${pin}`,
  };
}

async function startSoftHsm(dir: string, env: NodeJS.ProcessEnv, pin: string, extendedKeyUsage: string): Promise<{ rsa: ClientKey; ec: ClientKey }> {
  await writeFile(path.join(dir, "softhsm2.conf"), `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n`);
  await run("mkdir", ["-p", path.join(dir, "tokens"), env.HOME as string], { env });
  env.SOFTHSM2_CONF = path.join(dir, "softhsm2.conf");
  const ok = async (file: string, args: string[]) => {
    const result = await run(file, args, { env });
    if (result.code !== 0) throw new Error(describe(result));
  };
  const keys: ClientKey[] = [];
  for (const kind of ["rsa", "ec"] as const) {
    const keyName = `${kind}-key`;
    const tokenLabel = `${kind}-token`;
    const keyFile = path.join(dir, `${kind}.p8`);
    const certFile = path.join(dir, `${kind}.softhsm.crt`);
    await ok("openssl", ["genpkey", "-algorithm", kind === "rsa" ? "RSA" : "EC", "-pkeyopt", kind === "rsa" ? "rsa_keygen_bits:2048" : "ec_paramgen_curve:P-256", "-out", keyFile]);
    await ok("openssl", ["req", "-new", "-x509", "-key", keyFile, "-subj", `/CN=${keyName}`, "-days", "30", "-out", certFile,
      "-addext", "keyUsage=critical,digitalSignature", "-addext", `extendedKeyUsage=${extendedKeyUsage}`,
      "-addext", `subjectAltName=DNS:${keyName}`]);
    await ok("softhsm2-util", ["--init-token", "--free", "--label", tokenLabel, "--pin", pin, "--so-pin", "5678"]);
    await ok("softhsm2-util", ["--import", keyFile, "--token", tokenLabel, "--label", keyName, "--id", kind === "rsa" ? "01" : "02", "--pin", pin]);
    await ok("openssl", ["x509", "-in", certFile, "-outform", "der", "-out", `${certFile}.der`]);
    await ok("pkcs11-tool", ["--module", softhsmModulePath, "--token-label", tokenLabel, "--login", "--pin", pin, "-w", `${certFile}.der`, "-y", "cert", "-a", keyName, "-d", kind === "rsa" ? "01" : "02"]);
    const certificate = new X509Certificate(await readFile(certFile));
    keys.push(makeKey(kind, keyName, tokenLabel, dir, certificate.publicKey, certificate, pin));
  }
  return { rsa: keys[0] as ClientKey, ec: keys[1] as ClientKey };
}

const VAULT_TOKEN_LABEL = "vault";

export async function startClientFixture(options: ClientFixtureOptions = {}): Promise<ClientFixture> {
  const backend = process.env.AKV_CLIENT_TESTS_BACKEND === "softhsm" ? "softhsm" : "module";
  if (backend === "softhsm" && (options.vaultToken || options.deny)) throw new Error("vaultToken and deny need the module backend (an emulated vault)");
  const codeSigningOnly = options.certificateUsage === "codeSigning";
  const dir = await mkdtemp(path.join(tmpdir(), "akv-clients-"));
  const env = baseEnv(dir);
  await run("mkdir", ["-p", env.HOME as string], { env });
  if (env.XDG_RUNTIME_DIR) await run("mkdir", ["-m", "700", env.XDG_RUNTIME_DIR], { env });
  const daemons: Daemon[] = [];
  let keys: { rsa: ClientKey; ec: ClientKey };
  let pin: string | undefined;
  let chosenModule: string;
  let vault: VaultRest | undefined;
  try {
    if (backend === "softhsm") {
      pin = "1234";
      chosenModule = softhsmModulePath;
      keys = await startSoftHsm(dir, env, pin, codeSigningOnly ? "codeSigning" : "serverAuth,clientAuth,codeSigning,emailProtection");
    } else {
      chosenModule = modulePath;
      if (!existsSync(modulePath)) throw new Error(`${modulePath} is missing: run \`npm run build\` first`);
      const { daemon, info } = await startEmulatorProcess(dir, env, codeSigningOnly ? "all:codeSigning" : "all", options.deny);
      daemons.push(daemon);
      const caFile = path.join(dir, "emulator-ca.pem");
      await writeFile(caFile, info.caPem);
      const made: ClientKey[] = [];
      for (const kind of ["rsa", "ec"] as const) {
        const keyName = `${kind}-key`;
        const { publicKey, certificate } = await fetchFromVault(info, keyName);
        made.push(makeKey(kind, keyName, `${kind}-token`, dir, publicKey, certificate));
      }
      keys = { rsa: made[0] as ClientKey, ec: made[1] as ClientKey };
      const configFile = path.join(dir, "config.json");
      const config = {
        slots: [
          ...[keys.rsa, keys.ec].map((key) => ({ label: key.tokenLabel, key_name: key.keyName, vault_url: info.url })),
          ...(options.vaultToken ? [{ vault_url: info.url, label: VAULT_TOKEN_LABEL }] : []),
        ],
      };
      if (options.vaultToken) vault = vaultRest(info, VAULT_TOKEN_LABEL);
      await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`);
      Object.assign(env, {
        AZURE_KEYVAULT_PKCS11_CONFIG: configFile,
        AZURE_KEYVAULT_URL: info.url,
        IDENTITY_ENDPOINT: info.identityEndpoint,
        IDENTITY_HEADER: info.identityHeader,
        NODE_EXTRA_CA_CERTS: caFile,
      });
    }
    for (const key of [keys.rsa, keys.ec]) {
      await writeFile(key.publicKeyPath, key.publicKeyPem);
      await writeFile(key.certificatePath, key.certificatePem);
    }
  } catch (error) {
    await Promise.all(daemons.map((daemon) => daemon.stop()));
    await rm(dir, { recursive: true, force: true });
    throw error;
  }

  let engineConfig: Promise<string> | undefined;
  const writeEngineConfig = async (): Promise<string> => {
    const file = path.join(dir, "openssl-pkcs11.cnf");
    const pinLine = pin === undefined ? "" : `PIN = ${pin}\n`;
    await writeFile(
      file,
      `openssl_conf = openssl_init\n\n[openssl_init]\nengines = engine_section\n\n[engine_section]\npkcs11 = pkcs11_section\n\n` +
        `[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = ${libp11EnginePath}\nMODULE_PATH = ${chosenModule}\n${pinLine}init = 0\n\n` +
        `[req]\ndistinguished_name = req_dn\n\n[req_dn]\n`,
    );
    return file;
  };

  const fixture: ClientFixture = {
    backend,
    modulePath: chosenModule,
    dir,
    env,
    rsa: keys.rsa,
    ec: keys.ec,
    keys: [keys.rsa, keys.ec],
    file: (name) => path.join(dir, name),
    run: (file, args, options) => runClient(file, args, { env, cwd: dir, ...options }),
    async runOk(file, args, options) {
      const result = await runClient(file, args, { env, cwd: dir, ...options });
      if (result.code !== 0) throw new Error(describe(result));
      return result;
    },
    // Written once: two tests that wrote it at the same moment let one nginx read it half written, without its
    // MODULE_PATH, so that libp11 loaded p11-kit's proxy instead of this module ("Failed to enumerate slots").
    opensslEngineConfig() {
      engineConfig ??= writeEngineConfig();
      return engineConfig;
    },
    async tokenCertificate(key) {
      const read = await run("pkcs11-tool", [
        "--module", chosenModule, "--token-label", key.tokenLabel, "--read-object", "--type", "cert", "--label", key.keyName,
      ], { env, cwd: dir });
      if (read.code !== 0 || read.stdoutBytes.length === 0) throw new Error(describe(read));
      return new X509Certificate(read.stdoutBytes);
    },
    async close() {
      await stopAgent(env);
      await Promise.all(daemons.map((daemon) => daemon.stop()));
      if (process.env.AKV_CLIENT_TESTS_KEEP !== "1") await rm(dir, { recursive: true, force: true });
    },
  };
  if (pin !== undefined) fixture.pin = pin;
  if (vault !== undefined) fixture.vault = vault;
  return fixture;
}

/** True when two public keys are the same key (compared as DER SubjectPublicKeyInfo). */
export function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: "spki", format: "der" }).equals(b.export({ type: "spki", format: "der" }));
}

export { describe, freeLoopbackPort, run, startDaemon, waitFor, type Daemon, type RunResult };
