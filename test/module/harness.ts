// Shared fixture of the module tests: an in-process emulator holding the keys a test file asks for, a config.json
// that exposes each key as one token, and build/azure-keyvault-pkcs11.so loaded through pkcs11js. The public keys
// (and certificates) every assertion compares against are fetched from the emulator over HTTPS with a
// managed-identity token, independently of the module.
import { createPublicKey, type KeyObject, type JsonWebKey } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { get as httpGet } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readdirSync, readFileSync } from "node:fs";
import pkcs11js from "pkcs11js";
import { Worker } from "node:worker_threads";
import type { EmulatorOptions, FaultOptions, RunningEmulator as InProcessEmulator } from "../../src/emulator/index.ts";

/**
 * The emulator running on a worker thread (see emulator-worker.ts), with the in-process emulator's interface except
 * that reading the request counts and setting faults are message round trips.
 */
export interface RunningEmulator extends Omit<InProcessEmulator, "requestCounts" | "tokensIssued" | "setFaults"> {
  requestCounts(name?: string): Promise<Record<string, number>>;
  /** Denies the named permissions (e.g. "keys/create") from the next request on; [] allows everything again. */
  setPermissions(deny: string[] | undefined): Promise<void>;
  /** An oct key's bytes, which the REST API never returns: for checks with node:crypto. */
  octKeyBytes(name: string, version?: string): Promise<Buffer>;
  tokensIssued(): Promise<number>;
  /** In effect from the next request the emulator receives once the promise resolves. */
  setFaults(faults: FaultOptions | undefined): Promise<void>;
}

export function startEmulator(options: EmulatorOptions): Promise<RunningEmulator> {
  // Node 20 does not apply the main thread's tsx loader to a worker's entry module: register it first.
  const entry = new URL("./emulator-worker.ts", import.meta.url).href;
  const bootstrap = `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`;
  const worker = new Worker(bootstrap, { eval: true, workerData: options });
  let nextId = 1;
  let closing: Promise<void> | undefined;
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  const call = (message: Record<string, unknown>): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...message, id });
    });
  return new Promise((resolve, reject) => {
    worker.once("error", reject);
    worker.on("message", (message: { type: string; id?: number; error?: string; value?: unknown; info?: Omit<InProcessEmulator, "addKey" | "requestCounts" | "setFaults" | "close"> }) => {
      if (message.type === "ready") {
        resolve({
          ...message.info!,
          addKey: async (spec, addOptions) => {
            await call({ type: "addKey", spec, certificate: addOptions?.certificate });
          },
          requestCounts: async (name) => (await call({ type: "requestCounts", name })) as Record<string, number>,
          tokensIssued: async () => (await call({ type: "tokensIssued" })) as number,
          setPermissions: async (deny) => {
            await call({ type: "setPermissions", deny });
          },
          octKeyBytes: async (name, version) => Buffer.from((await call({ type: "octKeyBytes", name, version })) as Uint8Array),
          setFaults: async (faults) => {
            await call({ type: "setFaults", faults });
          },
          close: () =>
            (closing ??= (async () => {
              await call({ type: "close" });
              await worker.terminate();
            })()),
        });
      } else if (message.type === "done") {
        const waiter = pending.get(message.id!);
        pending.delete(message.id!);
        if (message.error) waiter?.reject(new Error(message.error));
        else waiter?.resolve(message.value);
      }
    });
  });
}

/** Requests per operation that `counts` holds beyond `before` (operations with no new request are left out). */
export function requestsSince(before: Record<string, number>, counts: Record<string, number>): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [operation, count] of Object.entries(counts)) {
    const added = count - (before[operation] ?? 0);
    if (added !== 0) delta[operation] = added;
  }
  return delta;
}

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const modulePath = path.join(repoRoot, "build", "azure-keyvault-pkcs11.so");

export const { PKCS11 } = pkcs11js;
export type Handle = Buffer;

export interface VaultJwk extends JsonWebKey {
  kid: string;
  kty: string;
  key_ops: string[];
}

export interface FixtureKey {
  name: string;
  /** Token label in config.json. */
  label: string;
  slot: Handle;
  /** From the emulator's JWK, not from the module. */
  jwk: VaultJwk;
  publicKey: KeyObject;
  /** The vault's certificate DER, when the emulator made one. */
  certificateDer?: Buffer;
}

export interface ModuleFixture {
  emulator: RunningEmulator;
  pkcs11: pkcs11js.PKCS11;
  dir: string;
  configPath: string;
  keys: Map<string, FixtureKey>;
  key(name: string): FixtureKey;
  /** GET on the emulator's data plane with a managed-identity token. */
  vaultGet(pathAndQuery: string): Promise<{ status: number; body: unknown }>;
  vaultPost(pathAndQuery: string, body: unknown): Promise<{ status: number; body: unknown }>;
  vaultRequest(method: string, pathAndQuery: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  close(): Promise<void>;
}

export interface FixtureOptions {
  /** Emulator key spec: "rsa2048:RSA:2048,p256:EC:P-256". */
  keys: string;
  certs?: EmulatorOptions["certs"];
  latencyMs?: number;
  /** The emulator's Managed HSM personality (only -HSM keys, AES, no certificates or secrets). */
  managedHsm?: boolean;
  /** Permissions the emulator refuses from the start, e.g. ["keys/create"]. */
  deny?: string[];
  /** Extra slot entries appended to config.json after the keys (e.g. a key that does not exist). */
  extraSlots?: Array<Record<string, unknown>>;
  /**
   * Extra fields for the slot of each named key (e.g. `certificate`, `certificate_path`), made once the emulator
   * runs and before config.json is written; `dir` is the fixture's temporary folder, which holds config.json.
   */
  slotFields?: (emulator: RunningEmulator, fixture: Pick<ModuleFixture, "vaultGet" | "dir">) => Promise<Record<string, Record<string, unknown>>>;
  /** Called before C_Initialize, e.g. to create keys with special key_ops. */
  prepare?: (emulator: RunningEmulator, fixture: Pick<ModuleFixture, "vaultPost">) => Promise<string[]>;
  /** Write a config without slots and set AZURE_KEYVAULT_URL, so that the module lists the vault's keys. */
  discover?: boolean;
  /** Leave C_Initialize to the test. */
  skipInitialize?: boolean;
}

/** A Managed HSM takes tokens for its own audience only. */
function identityToken(emulator: RunningEmulator, managedHsm = false): Promise<string> {
  const resource = managedHsm ? "https://managedhsm.azure.net" : "https://vault.azure.net";
  const url = `${emulator.identityEndpoint}?api-version=2019-08-01&resource=${encodeURIComponent(resource)}`;
  return new Promise((resolve, reject) => {
    httpGet(url, { headers: { "X-IDENTITY-HEADER": emulator.identityHeader } }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => (response.statusCode === 200 ? resolve((JSON.parse(body) as { access_token: string }).access_token) : reject(new Error(body))));
    }).on("error", reject);
  });
}

/** The vault's own answer to a REST request, with plain node:https and a token of the test's own. */
export function vaultRest(emulator: { url: string; caPem: string }, token: string, method: string, pathAndQuery: string, body?: unknown): Promise<{ status: number; body: any }> {
  const url = new URL(pathAndQuery, emulator.url);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, ca: emulator.caPem, headers: { authorization: `Bearer ${token}`, ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}) } },
      (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (text += chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

const JWK_CURVES: Record<string, string> = { "P-256": "P-256", "P-384": "P-384", "P-521": "P-521", "P-256K": "secp256k1" };

export function publicKeyFromJwk(jwk: VaultJwk): KeyObject {
  if (jwk.kty.startsWith("RSA")) return createPublicKey({ key: { kty: "RSA", n: jwk.n!, e: jwk.e! }, format: "jwk" });
  return createPublicKey({ key: { kty: "EC", crv: JWK_CURVES[jwk.crv!]!, x: jwk.x!, y: jwk.y! }, format: "jwk" });
}

export const API = "api-version=7.4";

export async function startModuleFixture(options: FixtureOptions): Promise<ModuleFixture> {
  const emulator = await startEmulator({ keys: options.keys, certs: options.certs, latencyMs: options.latencyMs, ...(options.managedHsm ? { managedHsm: true } : {}), ...(options.deny ? { deny: options.deny } : {}) });
  const dir = await mkdtemp(path.join(tmpdir(), "akv-module-test-"));
  const token = await identityToken(emulator, options.managedHsm);
  const vaultGet = (pathAndQuery: string) => vaultRest(emulator, token, "GET", pathAndQuery);
  const vaultPost = (pathAndQuery: string, body: unknown) => vaultRest(emulator, token, "POST", pathAndQuery, body);
  const names = options.keys
    .split(",")
    .filter((spec) => spec.trim() !== "")
    .map((spec) => spec.split(":")[0]!);
  if (options.prepare) names.push(...(await options.prepare(emulator, { vaultPost })));
  const slots: Array<Record<string, unknown>> = names.map((name) =>
    // Names longer than a token label get the module's default label (their first 32 characters).
    name.length <= 32 ? { key_name: name, label: name, vault_url: emulator.url } : { key_name: name, vault_url: emulator.url },
  );
  const fields = options.slotFields ? await options.slotFields(emulator, { vaultGet, dir }) : {};
  for (const slot of slots) Object.assign(slot, fields[slot.key_name as string]);
  slots.push(...(options.extraSlots ?? []).map((slot) => ({ vault_url: emulator.url, ...slot })));
  const configPath = path.join(dir, "config.json");
  await writeFile(configPath, JSON.stringify(options.discover ? {} : { slots }, null, 2));

  // The module's helper inherits this process's environment.
  process.env.IDENTITY_ENDPOINT = emulator.identityEndpoint;
  process.env.IDENTITY_HEADER = emulator.identityHeader;
  process.env.NODE_EXTRA_CA_CERTS = emulator.caFile;
  process.env.AZURE_KEYVAULT_PKCS11_CONFIG = configPath;
  // Private helpers, whatever the machine's runtime folder: the agent has tests of its own (test/agent/).
  process.env.AZURE_KEYVAULT_PKCS11_AGENT ??= "0";
  process.env.HOME = dir;
  if (options.discover) process.env.AZURE_KEYVAULT_URL = emulator.url;
  else delete process.env.AZURE_KEYVAULT_URL;
  if (options.discover) names.sort();

  const pkcs11 = new PKCS11();
  pkcs11.load(modulePath);
  if (!options.skipInitialize) pkcs11.C_Initialize();
  const slotList = options.skipInitialize ? [] : pkcs11.C_GetSlotList(true);

  const keys = new Map<string, FixtureKey>();
  await Promise.all(
    names.map(async (name, index) => {
      const response = await vaultGet(`/keys/${name}?${API}`);
      if (response.status !== 200) throw new Error(`GET key ${name}: ${response.status} ${JSON.stringify(response.body)}`);
      const jwk = (response.body as { key: VaultJwk }).key;
      const certificate = await vaultGet(`/certificates/${name}?${API}`);
      const certificateDer = certificate.status === 200 ? Buffer.from((certificate.body as { cer: string }).cer, "base64") : undefined;
      // An oct (AES) key has no public key: its publicKey throws when read.
      keys.set(name, {
        name,
        label: name.slice(0, 32),
        slot: slotList[index]!,
        jwk,
        get publicKey() {
          return publicKeyFromJwk(jwk);
        },
        certificateDer,
      });
    }),
  );

  return {
    emulator,
    pkcs11,
    dir,
    configPath,
    keys,
    key(name: string): FixtureKey {
      const key = keys.get(name);
      if (!key) throw new Error(`no key ${name} in the fixture`);
      return key;
    },
    vaultGet,
    vaultPost,
    vaultRequest: (method, pathAndQuery, body) => vaultRest(emulator, token, method, pathAndQuery, body),
    async close(): Promise<void> {
      try {
        pkcs11.C_Finalize();
      } catch {
        // Already finalized by the test.
      }
      await emulator.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---- PKCS#11 helpers the tests share ---------------------------------------------------------------------

/** Reads an attribute's bytes through pkcs11js. */
export function attribute(pkcs11: pkcs11js.PKCS11, session: Handle, object: Handle, type: number): Buffer {
  const [result] = pkcs11.C_GetAttributeValue(session, object, [{ type }]);
  return result!.value;
}

export function findObjects(pkcs11: pkcs11js.PKCS11, session: Handle, template: pkcs11js.Template): Handle[] {
  pkcs11.C_FindObjectsInit(session, template);
  try {
    return pkcs11.C_FindObjects(session, 100);
  } finally {
    pkcs11.C_FindObjectsFinal(session);
  }
}

export function findOne(pkcs11: pkcs11js.PKCS11, session: Handle, template: pkcs11js.Template): Handle {
  const found = findObjects(pkcs11, session, template);
  if (found.length !== 1) throw new Error(`expected one object, found ${found.length}`);
  return found[0]!;
}

export function openSession(fixture: ModuleFixture, keyName: string, readWrite = false): Handle {
  const flags = pkcs11js.CKF_SERIAL_SESSION | (readWrite ? pkcs11js.CKF_RW_SESSION : 0);
  return fixture.pkcs11.C_OpenSession(fixture.key(keyName).slot, flags);
}

export function privateKeyOf(fixture: ModuleFixture, session: Handle): Handle {
  return findOne(fixture.pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }]);
}

export function publicKeyObjectOf(fixture: ModuleFixture, session: Handle): Handle {
  return findOne(fixture.pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }]);
}

// pkcs11js names return values it knows (error.code); newer ones (CKR_ACTION_PROHIBITED ...) only appear in the
// message as "CKR_NAME:<decimal rv>" (as do all errors of some functions, e.g. C_SetAttributeValue).
function errorCode(error: unknown): number {
  const code = (error as { code?: number }).code;
  if (typeof code === "number") return code;
  const match = /^CKR_[A-Z_0-9]+:(\d+)$/.exec((error as Error).message ?? "");
  if (match) return Number(match[1]);
  throw error;
}

/** The CK_RV of a pkcs11js call that is expected to fail. */
export function rvOf(action: () => unknown): number | "ok" {
  try {
    action();
    return "ok";
  } catch (error) {
    return errorCode(error);
  }
}

export async function rvOfAsync(action: () => Promise<unknown>): Promise<number | "ok"> {
  try {
    await action();
    return "ok";
  } catch (error) {
    return errorCode(error);
  }
}

/** Pids of this process's children (the module's helper). */
export function childPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent === process.pid) pids.push(Number(entry));
    } catch {
      // The process went away while we looked.
    }
  }
  return pids;
}

/** PSS parameters as pkcs11js passes them. */
export function pssParams(hashAlg: number, mgf: number, saltLen: number): pkcs11js.RsaPSS {
  return { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg, mgf, saltLen };
}

export function oaepParams(hashAlg: number, mgf: number, sourceData?: Buffer): pkcs11js.RsaOAEP {
  return { type: pkcs11js.CK_PARAMS_RSA_OAEP, hashAlg, mgf, source: 1, ...(sourceData ? { sourceData } : {}) };
}

/** One C_SignInit + C_Sign on a fresh session of `keyName`'s token. */
export function signOnce(fixture: ModuleFixture, keyName: string, mechanism: pkcs11js.Mechanism, data: Buffer): Buffer {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, keyName);
  try {
    pkcs11.C_SignInit(session, mechanism, privateKeyOf(fixture, session));
    return pkcs11.C_Sign(session, data, Buffer.alloc(1024));
  } finally {
    pkcs11.C_CloseSession(session);
  }
}

/** C_SignInit + C_SignUpdate per part + C_SignFinal. */
export function signMultiPart(fixture: ModuleFixture, keyName: string, mechanism: pkcs11js.Mechanism, parts: Buffer[]): Buffer {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, keyName);
  try {
    pkcs11.C_SignInit(session, mechanism, privateKeyOf(fixture, session));
    for (const part of parts) pkcs11.C_SignUpdate(session, part);
    return pkcs11.C_SignFinal(session, Buffer.alloc(1024));
  } finally {
    pkcs11.C_CloseSession(session);
  }
}

/** C_VerifyInit on the public key object + C_Verify; returns the rv. */
export function verifyRv(fixture: ModuleFixture, keyName: string, mechanism: pkcs11js.Mechanism, data: Buffer, signature: Buffer): number | "ok" {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, keyName);
  try {
    pkcs11.C_VerifyInit(session, mechanism, publicKeyObjectOf(fixture, session));
    return rvOf(() => {
      if (!pkcs11.C_Verify(session, data, signature)) throw Object.assign(new Error("C_Verify returned false"), { code: pkcs11js.CKR_SIGNATURE_INVALID });
    });
  } finally {
    pkcs11.C_CloseSession(session);
  }
}

export const DIGEST_INFO_PREFIX: Record<string, string> = {
  sha1: "3021300906052b0e03021a05000414",
  sha224: "302d300d06096086480165030402040500041c",
  sha256: "3031300d060960864801650304020105000420",
  sha384: "3041300d060960864801650304020205000430",
  sha512: "3051300d060960864801650304020305000440",
};

/** A request frame as the shim sends it (docs/protocol.md): u32 length, u32 request id, u32 function id, payload. */
export function requestFrame(id: number, functionId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt32LE(8 + payload.length, 0);
  header.writeUInt32LE(id, 4);
  header.writeUInt32LE(functionId, 8);
  return Buffer.concat([header, payload]);
}
