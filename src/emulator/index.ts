// The Azure Key Vault emulator's programmatic API. The CLI (cli.ts) and the test fixture (test/fixtures/emulator.ts)
// are thin wrappers around startEmulator().
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MANAGED_HSM_RESOURCE, TokenService, VAULT_RESOURCE } from "./auth.ts";
import { CertificateStore, createSelfSignedCertificate, parseCertificateSpec, parseEkuList, startUpPolicy } from "./certificates.ts";
import { FaultInjector, type FaultOptions } from "./faults.ts";
import { KeyStore, parseKeySpecs } from "./keystore.ts";
import { SecretStore } from "./secrets.ts";
import { IDENTITY_PATH, checkManagedHsmKeyType, createHttpsHandler, createIdentityHandler, parsePermissions, type VaultState } from "./server.ts";
import { warmUpCurves } from "./operations.ts";
import { createPki } from "./tls.ts";

export type { FaultOptions } from "./faults.ts";

export interface EmulatorOptions {
  /** 0 = pick a free port (default). */
  port?: number;
  /** "name:RSA:2048,name2:EC:P-256,aes:oct:256" (also RSA-HSM/EC-HSM/oct-HSM). */
  keys?: string;
  /**
   * Self-signed certificates for these key names (backed by the key of the same name); "all" = every RSA/EC key.
   * An entry `name:codeSigning` (or `all:codeSigning`, usages joined by "+", names of EKU_OIDS or dotted OIDs)
   * gives the certificate exactly those extended key usages instead of clientAuth+serverAuth+codeSigning.
   */
  certs?: string[] | "all";
  /** Reuse ca.pem + ca-key.pem from this folder if present, else create them there. */
  caDir?: string;
  /** Also write the CA PEM to this path. */
  caOut?: string;
  /** Added to each data-plane response. */
  latencyMs?: number;
  tenantId?: string;
  /** Default random. */
  identityHeader?: string;
  /** Injected faults on data-plane requests (docs/emulator.md); setFaults() replaces them at run time. */
  faults?: FaultOptions;
  /** Default 3600 (tests use small values to test expiry). */
  tokenLifetimeSeconds?: number;
  /**
   * The Managed HSM personality: challenge resource https://managedhsm.azure.net (and tokens for it only),
   * RSA-HSM/EC-HSM/oct-HSM keys only, AES-GCM/CBC and CKM_AES_KEY_WRAP(_PAD), no RSNULL, no certificates or secrets.
   */
  managedHsm?: boolean;
  /** Permissions refused with the service's 403 ForbiddenByPolicy, e.g. ["keys/create", "secrets/set"]. */
  deny?: string[];
}

export interface RunningEmulator {
  /** https://127.0.0.1:<port> */
  url: string;
  identityEndpoint: string;
  identityHeader: string;
  caFile: string;
  caPem: string;
  tenantId: string;
  /**
   * Create keys/certs at run time, for tests (same effect as the CLI flags). `spec` is a --keys value; with
   * `certificate: true` each new RSA/EC key also gets a self-signed certificate of the same name, whose extended
   * key usages are `ekus` when given (e.g. ["codeSigning"]; names or dotted OIDs).
   */
  addKey(spec: string, options?: { certificate?: boolean; ekus?: string[] }): Promise<void>;
  /**
   * Data-plane requests received so far, by operation ("get-key", "get-certificate", "sign", "decrypt",
   * "list-keys" ...; see requestOperation in server.ts). Every request counts when it arrives, before fault
   * injection and authentication, so a test can prove that a call did or did not reach the vault. With `name`,
   * only the requests on the key or certificate of that name (any case).
   */
  requestCounts(name?: string): Record<string, number>;
  /** Access tokens issued so far by the identity and Entra ID endpoints. */
  tokensIssued(): number;
  /**
   * Replaces the injected faults from the next request on (undefined: none). Invalid options throw and leave the
   * current faults in place. Requests already held by a stall finish as they were drawn.
   */
  setFaults(faults: FaultOptions | undefined): void;
  close(): Promise<void>;
}

/**
 * What tests may do beyond a client's reach. Kept apart from RunningEmulator, whose shape the module tests' worker
 * harness mirrors.
 */
export interface EmulatorTestControls {
  /** Replaces the denied permissions from the next request on (`[]` or undefined: none). Unknown names throw. */
  setPermissions(deny: string[] | undefined): void;
  /** The AES key bytes of an oct key's latest version (or of `version`), which the REST API never returns. */
  octKeyBytes(name: string, version?: string): Buffer;
}

/** A start-up or addKey spec on the Managed HSM personality: the same rule as the REST API, as a plain Error. */
function checkKeySpecType(kty: string): void {
  try {
    checkManagedHsmKeyType(kty);
  } catch (error) {
    throw new Error(`${(error as Error).message} (--managed-hsm)`);
  }
}

function listen(server: HttpServer | HttpsServer, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: HttpServer | HttpsServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator & EmulatorTestControls> {
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`port must be 0-65535, got ${options.port}`);
  const latencyMs = options.latencyMs ?? 0;
  if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new Error(`latencyMs must be ≥ 0, got ${options.latencyMs}`);
  const lifetime = options.tokenLifetimeSeconds ?? 3600;
  if (!Number.isInteger(lifetime) || lifetime < 1) throw new Error(`tokenLifetimeSeconds must be a whole number ≥ 1, got ${options.tokenLifetimeSeconds}`);
  const tenantId = options.tenantId ?? randomUUID();
  const identityHeader = options.identityHeader ?? randomBytes(24).toString("base64url");
  if (identityHeader === "" || /[\r\n]/.test(identityHeader)) throw new Error("identityHeader must be a non-empty single-line string");
  const faults = new FaultInjector(options.faults);
  const specs = options.keys ? parseKeySpecs(options.keys) : [];
  const names = new Set<string>();
  for (const { name } of specs) {
    if (names.has(name)) throw new Error(`key '${name}' appears twice in the key spec`);
    names.add(name);
  }
  const managedHsm = options.managedHsm ?? false;
  if (managedHsm) for (const { request } of specs) checkKeySpecType(request.kty);
  const certSpecs = options.certs === "all" ? [{ name: "all" }] : (options.certs ?? []).map(parseCertificateSpec);
  if (managedHsm && certSpecs.length > 0) throw new Error("a Managed HSM has no certificates: drop certs or managedHsm");
  for (const { name } of certSpecs) {
    if (name !== "all" && !names.has(name)) throw new Error(`certificate '${name}' has no key of the same name in the key spec`);
  }

  const state: VaultState = {
    keys: new KeyStore(),
    certificates: new CertificateStore(),
    secrets: new SecretStore(),
    managedHsm,
    denied: parsePermissions(options.deny),
    tokens: new TokenService(tenantId, lifetime, managedHsm ? MANAGED_HSM_RESOURCE : VAULT_RESOURCE),
    faults,
    latencyMs,
    identityHeader,
    requestCounts: new Map(),
    requestCountsByName: new Map(),
    tokensIssued: 0,
  };

  const addCertificate = async (name: string, ekus?: string[]): Promise<void> => {
    state.certificates.add(await createSelfSignedCertificate(state.keys.get(name), startUpPolicy(name, ekus)));
  };

  // TLS material and every key are generated concurrently; RSA generation runs on libuv's thread pool.
  const [pki] = await Promise.all([createPki(options.caDir), ...specs.map(({ name, request }) => state.keys.create(name, request))]);
  // Usages named for one key win over those given with `all`, whatever the order of the entries.
  const certUsages = new Map<string, string[] | undefined>();
  for (const { name, ekus } of certSpecs) {
    if (name === "all") for (const s of specs) if (!s.request.kty.startsWith("oct") && !certUsages.has(s.name)) certUsages.set(s.name, ekus);
  }
  for (const { name, ekus } of certSpecs) if (name !== "all") certUsages.set(name, ekus);
  for (const name of certUsages.keys()) {
    if (state.keys.get(name).material.family === "oct") throw new Error(`certificate '${name}': an oct (AES) key cannot back a certificate`);
  }
  await Promise.all([...certUsages].map(([name, ekus]) => addCertificate(name, ekus)));

  let tempDir: string | undefined;
  let caFile: string;
  if (options.caDir) {
    caFile = join(options.caDir, "ca.pem");
  } else {
    tempDir = await mkdtemp(join(tmpdir(), "akv-emulator-"));
    caFile = join(tempDir, "ca.pem");
    await writeFile(caFile, pki.caPem);
  }
  if (options.caOut) await writeFile(options.caOut, pki.caPem);

  const https = createHttpsServer({ key: pki.serverKeyPem, cert: pki.serverCertPem }, createHttpsHandler(state));
  // Clients keep connections alive; keep them open at least as long as the Azure SDK's agent would.
  https.keepAliveTimeout = 60_000;
  https.headersTimeout = 65_000;
  const identity = createHttpServer(createIdentityHandler(state));
  let httpsPort: number;
  let identityPort: number;
  try {
    [httpsPort, identityPort] = await Promise.all([listen(https, port), listen(identity, 0)]);
  } catch (error) {
    https.close();
    identity.close();
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
    throw error;
  }

  // @noble/curves builds its precomputed tables on a curve's first signature (0.1-0.3 s each); do it now, after
  // start-up, rather than inside the first sign request.
  setImmediate(() => warmUpCurves(specs.map((s) => s.request.curve).filter((c): c is string => c !== undefined)));

  let closed: Promise<void> | undefined;
  return {
    url: `https://127.0.0.1:${httpsPort}`,
    identityEndpoint: `http://127.0.0.1:${identityPort}${IDENTITY_PATH}`,
    identityHeader,
    caFile,
    caPem: pki.caPem,
    tenantId,
    async addKey(spec: string, addOptions?: { certificate?: boolean; ekus?: string[] }): Promise<void> {
      const parsed = parseKeySpecs(spec);
      if (managedHsm) {
        for (const { request } of parsed) checkKeySpecType(request.kty);
        if (addOptions?.certificate) throw new Error("a Managed HSM has no certificates");
      }
      const ekus = addOptions?.ekus && parseEkuList(addOptions.ekus.join("+"));
      await Promise.all(parsed.map(({ name, request }) => state.keys.create(name, request)));
      if (addOptions?.certificate) {
        await Promise.all(parsed.filter((s) => !s.request.kty.startsWith("oct")).map((s) => addCertificate(s.name, ekus)));
      }
    },
    setFaults(faults: FaultOptions | undefined): void {
      state.faults = new FaultInjector(faults);
    },
    setPermissions(deny: string[] | undefined): void {
      state.denied = parsePermissions(deny);
    },
    octKeyBytes(name: string, version?: string): Buffer {
      const key = state.keys.get(name, version);
      if (!key.material.octKey) throw new Error(`key '${name}' is ${key.kty}, not an AES (oct) key`);
      return Buffer.from(key.material.octKey);
    },
    tokensIssued: () => state.tokensIssued,
    requestCounts: (name?: string) => Object.fromEntries(name === undefined ? state.requestCounts : state.requestCountsByName.get(name.toLowerCase()) ?? []),
    close(): Promise<void> {
      closed ??= (async () => {
        await Promise.all([closeServer(https), closeServer(identity)]);
        if (tempDir) await rm(tempDir, { recursive: true, force: true });
      })();
      return closed;
    },
  };
}
