// The HTTPS front door: Entra ID endpoints (client credentials and the discovery documents MSAL reads), then the
// Key Vault data plane behind fault injection, challenge authentication, api-version checks and added latency.
// Plus the plain-HTTP App Service managed-identity endpoint, served on its own loopback port as App Service does.
import { randomBytes, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { log } from "../log/log.ts";
import { ALL_KEY_OPS, KEY_TYPES, MANAGED_HSM_KEY_TYPES, PERMISSIONS } from "./algorithms.ts";
import { TokenService, resourceFromScope } from "./auth.ts";
import {
  CertificateStore,
  certificateBundle,
  certificateItem,
  certificateOperation,
  certificatePolicy,
  type CertificateVersion,
  createCertificateRequest,
  createSelfSignedCertificate,
  keyRequestOf,
  parseCreateCertificateRequest,
} from "./certificates.ts";
import { KeyVaultError, badParameter, deletedNameConflict, forbiddenByPolicy, secretNotFound } from "./errors.ts";
import type { FaultInjector } from "./faults.ts";
import { KeyStore, byLowerCaseName, deletedKeyBundle, deletedKeyItem, keyBundle, keyId, keyItem, nowSeconds, type CreateKeyRequest, type KeyVersion } from "./keystore.ts";
import { checkUsable, decrypt, encrypt, sign, verify, type KeyOperation, type SymmetricParameters } from "./operations.ts";
import { SecretStore, deletedSecretBundle, deletedSecretItem, secretBundle, secretItem, type SecretVersion } from "./secrets.ts";

export interface VaultState {
  keys: KeyStore;
  certificates: CertificateStore;
  secrets: SecretStore;
  /** The Managed HSM personality: -HSM keys only, AES operations, no certificates or secrets. */
  managedHsm: boolean;
  /** Permissions ("keys/create" ...) refused with the service's 403 ForbiddenByPolicy. */
  denied: ReadonlySet<string>;
  tokens: TokenService;
  faults: FaultInjector;
  latencyMs: number;
  identityHeader: string;
  /** Data-plane requests received, by operation name (see requestOperation); faulted and refused ones included. */
  requestCounts: Map<string, number>;
  /** The same, for each key or certificate name a request names (lower case, as the vault's names are case-blind). */
  requestCountsByName: Map<string, Map<string, number>>;
  /** Access tokens issued (managed identity and Entra ID token endpoints), for tests that prove a credential was reused. */
  tokensIssued: number;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

const MAX_BODY_BYTES = 1 << 20;
const PAGE_SIZE = 25;
const API_VERSION = /^(7\.\d+(-preview(\.\d+)?)?|\d{4}-\d{2}-\d{2}(-preview(\.\d+)?)?)$/;
const SERVICE_VERSION = "1.9.0.0-emulator";

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(badParameter("The request body is too large."));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function parseJson(raw: Buffer): Record<string, unknown> {
  if (raw.length === 0) return {};
  try {
    const value: unknown = JSON.parse(raw.toString("utf8"));
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not an object");
    return value as Record<string, unknown>;
  } catch {
    throw badParameter("The request body is not a valid JSON object.");
  }
}

function send(req: IncomingMessage, res: ServerResponse, reply: Reply): void {
  if (res.destroyed || res.writableEnded) return;
  const payload = reply.body === undefined ? "" : JSON.stringify(reply.body);
  const headers: Record<string, string> = {
    "Cache-Control": "no-cache",
    Pragma: "no-cache",
    Expires: "-1",
    "Content-Length": String(Buffer.byteLength(payload)),
    "x-ms-request-id": randomUUID(),
    "x-ms-keyvault-service-version": SERVICE_VERSION,
    "x-ms-keyvault-region": "emulator",
    "X-Content-Type-Options": "nosniff",
    ...reply.headers,
  };
  if (payload) headers["Content-Type"] = "application/json; charset=utf-8";
  const clientRequestId = req.headers["x-ms-client-request-id"];
  if (typeof clientRequestId === "string") headers["x-ms-client-request-id"] = clientRequestId;
  res.writeHead(reply.status, headers);
  res.end(payload);
}

const errorReply = (error: KeyVaultError): Reply => ({ status: error.status, body: error.body(), headers: error.headers });

function decodeValue(body: Record<string, unknown>, field: string): Buffer {
  const value = body[field];
  if (typeof value !== "string") throw badParameter(`Property '${field}' is required and must be a base64url string.`);
  if (!/^[A-Za-z0-9_\-+/]*={0,2}$/.test(value)) throw badParameter(`Property '${field}' is not valid base64url.`);
  return Buffer.from(value, "base64url");
}

function decodeOptional(body: Record<string, unknown>, field: string): Buffer | undefined {
  return body[field] === undefined || body[field] === null ? undefined : decodeValue(body, field);
}

function optionalSeconds(value: unknown, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) throw badParameter(`Property 'attributes.${field}' must be a number of seconds since 1970.`);
  return Math.floor(value);
}

function parseKeyOps(value: unknown): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.some((op) => typeof op !== "string" || !(ALL_KEY_OPS as readonly string[]).includes(op))) {
    throw badParameter(`Property 'key_ops' must be a list of: ${ALL_KEY_OPS.join(", ")}.`);
  }
  return [...new Set(value as string[])];
}

function parseTags(value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value) || Object.values(value).some((v) => typeof v !== "string")) {
    throw badParameter("Property 'tags' must map names to strings.");
  }
  return value as Record<string, string>;
}

/** Managed HSM holds HSM-protected keys only; the wording is the emulator's own (docs/emulator.md). */
export function checkManagedHsmKeyType(kty: string): void {
  if (!MANAGED_HSM_KEY_TYPES.has(kty)) throw badParameter(`Key type '${kty}' is not supported by Managed HSM. Supported key types: ${[...MANAGED_HSM_KEY_TYPES].join(", ")}.`);
}

function attributesOf(body: Record<string, unknown>): Record<string, unknown> {
  const attributes = body.attributes ?? {};
  if (attributes === null || typeof attributes !== "object" || Array.isArray(attributes)) throw badParameter("Property 'attributes' must be an object.");
  return attributes as Record<string, unknown>;
}

/** enabled, nbf, exp and tags: the members create, import and set-secret requests share. */
function commonProperties(body: Record<string, unknown>): { enabled?: boolean; nbf?: number; exp?: number; tags?: Record<string, string> } {
  const attributes = attributesOf(body);
  const common: { enabled?: boolean; nbf?: number; exp?: number; tags?: Record<string, string> } = {};
  if (attributes.enabled !== undefined && typeof attributes.enabled !== "boolean") throw badParameter("Property 'attributes.enabled' must be a boolean.");
  if (typeof attributes.enabled === "boolean") common.enabled = attributes.enabled;
  const nbf = optionalSeconds(attributes.nbf, "nbf");
  const exp = optionalSeconds(attributes.exp, "exp");
  if (nbf !== undefined) common.nbf = nbf;
  if (exp !== undefined) common.exp = exp;
  const tags = parseTags(body.tags);
  if (tags) common.tags = tags;
  return common;
}

/** PUT /keys/{name} (keys.json: KeyImportParameters; the SDKs send `Hsm`, the spec's spelling). */
function importRequestFromBody(body: Record<string, unknown>, managedHsm: boolean): { request: CreateKeyRequest; jwk: Record<string, unknown> } {
  const jwk = body.key;
  if (jwk === null || typeof jwk !== "object" || Array.isArray(jwk)) throw badParameter("Property 'key' is required and must be a JSON Web Key.");
  const key = jwk as Record<string, unknown>;
  const kty = key.kty;
  if (typeof kty !== "string" || !KEY_TYPES[kty]) throw badParameter(`Property 'key.kty' must be one of: ${Object.keys(KEY_TYPES).join(", ")}.`);
  const hsm = body.Hsm ?? body.hsm;
  if (hsm !== undefined && typeof hsm !== "boolean") throw badParameter("Property 'Hsm' must be a boolean.");
  const storedKty = hsm === true && !kty.endsWith("-HSM") ? `${kty}-HSM` : kty;
  if (managedHsm) checkManagedHsmKeyType(storedKty);
  const request: CreateKeyRequest = { kty: storedKty, ...commonProperties(body) };
  const keyOps = parseKeyOps(key.key_ops);
  if (keyOps) request.keyOps = keyOps;
  return { request, jwk: key };
}

function createRequestFromBody(body: Record<string, unknown>, managedHsm: boolean): CreateKeyRequest {
  const kty = body.kty;
  if (typeof kty !== "string" || !KEY_TYPES[kty]) throw badParameter(`Property 'kty' must be one of: ${Object.keys(KEY_TYPES).join(", ")}.`);
  if (managedHsm) checkManagedHsmKeyType(kty);
  const attributes = attributesOf(body);
  const request: CreateKeyRequest = { kty };
  if (body.key_size !== undefined) {
    if (typeof body.key_size !== "number") throw badParameter("Property 'key_size' must be a number.");
    request.keySize = body.key_size;
  }
  if (body.crv !== undefined) {
    if (typeof body.crv !== "string") throw badParameter("Property 'crv' must be a string.");
    request.curve = body.crv;
  }
  const keyOps = parseKeyOps(body.key_ops);
  if (keyOps) request.keyOps = keyOps;
  if (typeof attributes.enabled === "boolean") request.enabled = attributes.enabled;
  const nbf = optionalSeconds(attributes.nbf, "nbf");
  const exp = optionalSeconds(attributes.exp, "exp");
  if (nbf !== undefined) request.nbf = nbf;
  if (exp !== undefined) request.exp = exp;
  const tags = parseTags(body.tags);
  if (tags) request.tags = tags;
  return request;
}

function applyUpdate(v: KeyVersion, body: Record<string, unknown>): void {
  const keyOps = parseKeyOps(body.key_ops);
  const attributes = body.attributes as Record<string, unknown> | undefined;
  if (attributes !== undefined && (attributes === null || typeof attributes !== "object")) throw badParameter("Property 'attributes' must be an object.");
  const tags = parseTags(body.tags);
  const nbf = attributes ? optionalSeconds(attributes.nbf, "nbf") : undefined;
  const exp = attributes ? optionalSeconds(attributes.exp, "exp") : undefined;
  if (attributes && attributes.enabled !== undefined && typeof attributes.enabled !== "boolean") throw badParameter("Property 'attributes.enabled' must be a boolean.");
  if (keyOps) v.keyOps = keyOps;
  if (attributes && typeof attributes.enabled === "boolean") v.enabled = attributes.enabled;
  if (nbf !== undefined) v.nbf = nbf;
  if (exp !== undefined) v.exp = exp;
  if (tags) v.tags = tags;
  v.updated = nowSeconds();
}

/** Reads the $skiptoken of a list request: the sort key of the last item already returned. */
function skipMarker(url: URL): string | undefined {
  const token = url.searchParams.get("$skiptoken");
  if (!token) return undefined;
  try {
    const marker = (JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { NextMarker?: unknown }).NextMarker;
    if (typeof marker === "string") return marker;
  } catch {
    // fall through
  }
  throw badParameter("The $skiptoken is not valid.");
}

/**
 * One page of a list. `items` are sorted by `sortKey`; the next page resumes after the last key returned, so keys
 * created or deleted between pages neither repeat nor shift other items.
 */
function page<T>(items: T[], sortKey: (item: T) => string, url: URL, base: string, path: string, toJson: (item: T) => unknown): Reply {
  const maxParam = url.searchParams.get("maxresults");
  let max = PAGE_SIZE;
  if (maxParam !== null) {
    max = Number(maxParam);
    if (!Number.isInteger(max) || max < 1 || max > PAGE_SIZE) throw badParameter(`Invalid maxresults: must be between 1 and ${PAGE_SIZE}.`);
  }
  const marker = skipMarker(url);
  const remaining = marker === undefined ? items : items.filter((item) => sortKey(item) > marker);
  const slice = remaining.slice(0, max);
  const body: Record<string, unknown> = { value: slice.map(toJson), nextLink: null };
  if (remaining.length > max) {
    const token = Buffer.from(JSON.stringify({ NextMarker: sortKey(slice[slice.length - 1]!), TargetLocation: 0 })).toString("base64url");
    const apiVersion = encodeURIComponent(url.searchParams.get("api-version") ?? "");
    body.nextLink = `${base}${path}?api-version=${apiVersion}&$skiptoken=${token}&maxresults=${max}`;
  }
  return { status: 200, body };
}

const byName = (item: { name: string }): string => item.name.toLowerCase();
const byPosition = <T>(items: T[]): ((item: T) => string) => (item) => String(items.indexOf(item)).padStart(10, "0");

const CRYPTO_ROUTES: Record<string, KeyOperation> = {
  sign: "sign",
  verify: "verify",
  encrypt: "encrypt",
  decrypt: "decrypt",
  wrapkey: "wrapKey",
  unwrapkey: "unwrapKey",
};

function symmetricParameters(body: Record<string, unknown>): SymmetricParameters {
  const params: SymmetricParameters = {};
  const iv = decodeOptional(body, "iv");
  const aad = decodeOptional(body, "aad");
  const tag = decodeOptional(body, "tag");
  if (iv) params.iv = iv;
  if (aad && aad.length > 0) params.aad = aad;
  if (tag) params.tag = tag;
  return params;
}

function cryptoOperation(state: VaultState, base: string, v: KeyVersion, op: KeyOperation, body: Record<string, unknown>): Reply {
  checkUsable(v, op);
  const kid = keyId(base, v);
  const hsm = state.managedHsm;
  switch (op) {
    case "sign":
      return { status: 200, body: { kid, value: sign(v, body.alg, decodeValue(body, "value"), hsm).toString("base64url") } };
    case "verify":
      return { status: 200, body: { value: verify(v, body.alg, decodeValue(body, "digest"), decodeValue(body, "value"), hsm) } };
    case "encrypt":
    case "wrapKey": {
      const result = encrypt(v, body.alg, decodeValue(body, "value"), op === "encrypt" ? "encrypt" : "wrapKey", hsm, symmetricParameters(body));
      // keys.json KeyOperationResult: value, and for AES iv, tag (GCM) and aad as the service returns them.
      const reply: Record<string, unknown> = { kid, value: result.value.toString("base64url") };
      if (result.iv) reply.iv = result.iv.toString("base64url");
      if (result.tag) reply.tag = result.tag.toString("base64url");
      if (result.aad) reply.aad = result.aad.toString("base64url");
      return { status: 200, body: reply };
    }
    case "decrypt":
    case "unwrapKey":
      return { status: 200, body: { kid, value: decrypt(v, body.alg, decodeValue(body, "value"), op === "decrypt" ? "encrypt" : "wrapKey", hsm, symmetricParameters(body)).toString("base64url") } };
  }
}

/** A certificate's own secret, answered from the certificate (the service's `managed` secret behind `sid`). */
function certificateSecret(base: string, c: CertificateVersion): SecretVersion {
  const pem = `-----BEGIN CERTIFICATE-----\n${c.der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
  return {
    name: c.name,
    version: c.version,
    value: pem,
    contentType: "application/x-pem-file",
    enabled: true,
    nbf: c.nbf,
    exp: c.exp,
    created: c.created,
    updated: c.created,
    kid: `${base}/keys/${c.name}/${c.version}`,
    managed: true,
  };
}

const managedByCertificate = (name: string): KeyVaultError =>
  new KeyVaultError(409, "Conflict", `Secret ${name} is managed by the certificate of the same name; set or delete the certificate instead.`);

function secretsRoute(state: VaultState, method: string, url: URL, base: string, body: Record<string, unknown>, name: string | undefined, third: string | undefined, fourth: string | undefined): Reply {
  const { secrets, certificates } = state;
  if (name === undefined || name === "") {
    if (method !== "GET") throw methodNotAllowed();
    const own = secrets.names().map((n) => secrets.get(n));
    const managed = certificates.names().filter((n) => !secrets.has(n)).map((n) => certificateSecret(base, certificates.get(n)));
    const all = [...own, ...managed].sort((a, b) => byLowerCaseName(a.name, b.name));
    return page(all, byName, url, base, "/secrets", (s) => secretItem(base, s, false));
  }
  if (fourth !== undefined) throw notFound(url.pathname);
  const certificate = secrets.has(name) ? undefined : certificates.find(name);
  if (third === undefined) {
    if (method === "PUT") {
      if (certificates.find(name)) throw managedByCertificate(name);
      const value = body.value;
      if (typeof value !== "string") throw badParameter("Property 'value' is required and must be a string.");
      const contentType = body.contentType;
      if (contentType !== undefined && contentType !== null && typeof contentType !== "string") throw badParameter("Property 'contentType' must be a string.");
      const request = { value, ...commonProperties(body), ...(typeof contentType === "string" ? { contentType } : {}) };
      return { status: 200, body: secretBundle(base, secrets.set(name, request)) };
    }
    if (method === "GET") return { status: 200, body: secretBundle(base, certificate ? certificateSecret(base, certificate) : secrets.get(name)) };
    if (method === "DELETE") {
      if (certificate) throw managedByCertificate(name);
      return { status: 200, body: deletedSecretBundle(base, secrets.delete(name)) };
    }
    throw methodNotAllowed();
  }
  if (method !== "GET") throw methodNotAllowed();
  if (third === "versions") {
    const versions = certificate ? certificates.versions(name).map((c) => certificateSecret(base, c)) : secrets.versions(name);
    return page(versions, byPosition(versions), url, base, `/secrets/${name}/versions`, (s) => secretItem(base, s, true));
  }
  if (certificate) {
    const version = certificates.versions(name).find((c) => c.version === third);
    if (!version) throw secretNotFound(name, third);
    return { status: 200, body: secretBundle(base, certificateSecret(base, version)) };
  }
  return { status: 200, body: secretBundle(base, secrets.get(name, third)) };
}

function deletedSecretsRoute(state: VaultState, method: string, url: URL, base: string, name: string | undefined, third: string | undefined, fourth: string | undefined): Reply {
  const { secrets } = state;
  if (name === undefined || name === "") {
    if (method !== "GET") throw methodNotAllowed();
    return page(secrets.deletedNames(), (n) => n.toLowerCase(), url, base, "/deletedsecrets", (n) => deletedSecretItem(base, secrets.getDeleted(n)));
  }
  if (third === undefined) {
    if (method === "GET") return { status: 200, body: deletedSecretBundle(base, secrets.getDeleted(name)) };
    if (method === "DELETE") {
      secrets.purge(name);
      return { status: 204 };
    }
    throw methodNotAllowed();
  }
  if (third === "recover" && fourth === undefined) {
    if (method !== "POST") throw methodNotAllowed();
    return { status: 200, body: secretBundle(base, secrets.recover(name)) };
  }
  throw notFound(url.pathname);
}

/**
 * A "Self" certificate: a new version of the key of the same name and a certificate it signs, sharing that version.
 * The service answers 202 with the pending operation and a Location to poll. Without a policy the request repeats
 * the certificate's current one, as the service does for a new version.
 */
async function createCertificate(state: VaultState, base: string, name: string, body: Record<string, unknown>, apiVersion: string): Promise<Reply> {
  // The certificate's secret shares its name: a secret of that name already taken (or soft-deleted) is in the way.
  if (state.secrets.isDeleted(name)) throw deletedNameConflict("Secret", name);
  if (state.secrets.has(name)) throw new KeyVaultError(409, "Conflict", `A secret named ${name} exists; a certificate cannot take its name.`);
  const latest = state.certificates.find(name);
  const { key: keyRequest, policy } = parseCreateCertificateRequest(body, latest && { key: keyRequestOf(latest.key), policy: latest.policy });
  const key = await state.keys.create(name, keyRequest);
  const [certificate, csr] = await Promise.all([createSelfSignedCertificate(key, policy), createCertificateRequest(key, policy)]);
  state.certificates.add(certificate);
  const operation = { name, requestId: randomBytes(16).toString("hex"), csr };
  state.certificates.setOperation(operation);
  return {
    status: 202,
    body: certificateOperation(base, operation, false),
    // The service also sends Retry-After: 10; the operation here is already complete, so pollers need not wait.
    headers: { Location: `${base}/certificates/${name}/pending?api-version=${encodeURIComponent(apiVersion)}&request_id=${operation.requestId}` },
  };
}

const methodNotAllowed = (): KeyVaultError => new KeyVaultError(405, "MethodNotAllowed", "The requested method is not allowed on this resource.");
const notFound = (path: string): KeyVaultError => new KeyVaultError(404, "NotFound", `The requested resource ${path} was not found.`);

async function route(state: VaultState, req: IncomingMessage, url: URL, base: string, segments: string[], raw: Buffer): Promise<Reply> {
  const method = req.method ?? "GET";
  const body = method === "POST" || method === "PATCH" || method === "PUT" ? parseJson(raw) : {};
  const [collection, name, third, fourth, ...rest] = segments;
  if (rest.length > 0) throw notFound(url.pathname);

  if (collection === "keys") {
    if (name === undefined || name === "") {
      if (method !== "GET") throw methodNotAllowed();
      const latest = state.keys.names().map((n) => state.keys.get(n));
      return page(latest, byName, url, base, "/keys", (v) => keyItem(base, v, false));
    }
    if (third === undefined) {
      if (method === "GET") return { status: 200, body: keyBundle(base, state.keys.get(name)) };
      if (method === "DELETE") return { status: 200, body: deletedKeyBundle(base, state.keys.delete(name)) };
      if (method === "PUT") {
        const { request, jwk } = importRequestFromBody(body, state.managedHsm);
        return { status: 200, body: keyBundle(base, state.keys.import(name, request, jwk)) };
      }
      throw methodNotAllowed();
    }
    if (fourth === undefined) {
      if (third === "create") {
        if (method !== "POST") throw methodNotAllowed();
        return { status: 200, body: keyBundle(base, await state.keys.create(name, createRequestFromBody(body, state.managedHsm))) };
      }
      if (third === "rotate") {
        if (method !== "POST") throw methodNotAllowed();
        const latest = state.keys.get(name);
        const m = latest.material;
        const request: CreateKeyRequest = { kty: latest.kty, keyOps: [...latest.keyOps] };
        if (m.modulusBits) request.keySize = m.modulusBits;
        if (m.octKey) request.keySize = m.octKey.length * 8;
        if (m.curve) request.curve = m.curve;
        return { status: 200, body: keyBundle(base, await state.keys.create(name, request)) };
      }
      if (third === "versions") {
        if (method !== "GET") throw methodNotAllowed();
        const versions = state.keys.versions(name);
        return page(versions, byPosition(versions), url, base, `/keys/${name}/versions`, (v) => keyItem(base, v, true));
      }
      // /keys/{name}/{version}; an empty version (a trailing slash) means the latest.
      const v = state.keys.get(name, third);
      if (method === "GET") return { status: 200, body: keyBundle(base, v) };
      if (method === "PATCH") {
        applyUpdate(v, body);
        return { status: 200, body: keyBundle(base, v) };
      }
      throw methodNotAllowed();
    }
    const op = CRYPTO_ROUTES[fourth];
    if (!op) throw notFound(url.pathname);
    if (method !== "POST") throw methodNotAllowed();
    return cryptoOperation(state, base, state.keys.get(name, third), op, body);
  }

  if (collection === "deletedkeys") {
    if (name === undefined || name === "") {
      if (method !== "GET") throw methodNotAllowed();
      return page(state.keys.deletedNames(), (n) => n.toLowerCase(), url, base, "/deletedkeys", (n) => deletedKeyItem(base, state.keys.getDeleted(n)));
    }
    if (third === undefined) {
      if (method === "GET") return { status: 200, body: deletedKeyBundle(base, state.keys.getDeleted(name)) };
      if (method === "DELETE") {
        state.keys.purge(name);
        return { status: 204 };
      }
      throw methodNotAllowed();
    }
    if (third === "recover" && fourth === undefined) {
      if (method !== "POST") throw methodNotAllowed();
      return { status: 200, body: keyBundle(base, state.keys.recover(name)) };
    }
    throw notFound(url.pathname);
  }

  // Managed HSM has keys only: its data plane knows no certificate or secret paths.
  if (state.managedHsm && (collection === "certificates" || collection === "deletedcertificates" || collection === "secrets" || collection === "deletedsecrets")) {
    throw notFound(url.pathname);
  }

  if (collection === "secrets") return secretsRoute(state, method, url, base, body, name, third, fourth);
  if (collection === "deletedsecrets") return deletedSecretsRoute(state, method, url, base, name, third, fourth);

  if (collection === "certificates") {
    if (name && third === "create" && fourth === undefined) {
      if (method !== "POST") throw methodNotAllowed();
      return createCertificate(state, base, name, body, url.searchParams.get("api-version") ?? "");
    }
    if (method !== "GET") throw methodNotAllowed();
    if (name === undefined || name === "") {
      const latest = state.certificates.names().map((n) => state.certificates.get(n));
      return page(latest, byName, url, base, "/certificates", (c) => certificateItem(base, c, false));
    }
    if (fourth !== undefined) throw notFound(url.pathname);
    if (third === "versions") {
      const versions = state.certificates.versions(name);
      return page(versions, byPosition(versions), url, base, `/certificates/${name}/versions`, (c) => certificateItem(base, c, true));
    }
    if (third === "pending") return { status: 200, body: certificateOperation(base, state.certificates.operation(name), true) };
    if (third === "policy") return { status: 200, body: certificatePolicy(base, state.certificates.get(name)) };
    const cert = state.certificates.get(name, third);
    return { status: 200, body: certificateBundle(base, cert, !third) };
  }

  if (collection === "rng" && name === undefined) {
    if (method !== "POST") throw methodNotAllowed();
    const count = body.count;
    if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > 128) {
      throw badParameter("GetRandomBytesRequest: count cannot be greater than 128 or less than 1");
    }
    return { status: 200, body: { value: randomBytes(count).toString("base64url") } };
  }

  throw notFound(url.pathname);
}

// ---- Entra ID (login.microsoftonline.com) look-alike ----

function oauthError(status: number, error: string, code: number, description: string): Reply {
  return {
    status,
    body: { error, error_description: `AADSTS${code}: ${description}`, error_codes: [code], timestamp: new Date().toISOString(), trace_id: randomUUID(), correlation_id: randomUUID() },
  };
}

function clientCredentialsToken(state: VaultState, raw: Buffer, contentType: string | undefined): Reply {
  if (!contentType?.startsWith("application/x-www-form-urlencoded")) {
    return oauthError(400, "invalid_request", 900144, "The request body must be application/x-www-form-urlencoded.");
  }
  const form = new URLSearchParams(raw.toString("utf8"));
  const grantType = form.get("grant_type");
  if (grantType !== "client_credentials") {
    return oauthError(400, "unsupported_grant_type", 70003, `The app requested an unsupported grant type '${grantType ?? ""}'.`);
  }
  const clientId = form.get("client_id");
  if (!clientId) return oauthError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.");
  if (!form.get("client_secret") && !form.get("client_assertion")) {
    return oauthError(401, "invalid_client", 7000215, "Invalid client secret provided. A client secret or client assertion is required.");
  }
  const scope = form.get("scope");
  if (!scope) return oauthError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.");
  const resourceScope = scope.split(" ").find((s) => s.endsWith("/.default"));
  if (!resourceScope) return oauthError(400, "invalid_scope", 1002012, `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.`);
  const token = state.tokens.issue(resourceFromScope(resourceScope), clientId);
  state.tokensIssued++;
  const expiresIn = token.expiresOn - Math.floor(Date.now() / 1000);
  return { status: 200, body: { token_type: "Bearer", expires_in: expiresIn, ext_expires_in: expiresIn, access_token: token.accessToken } };
}

function openIdConfiguration(base: string, tenant: string): Reply {
  const root = `${base}/${tenant}`;
  return {
    status: 200,
    body: {
      token_endpoint: `${root}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
      jwks_uri: `${root}/discovery/v2.0/keys`,
      response_modes_supported: ["query", "fragment", "form_post"],
      subject_types_supported: ["pairwise"],
      id_token_signing_alg_values_supported: ["RS256"],
      response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
      scopes_supported: ["openid", "profile", "email", "offline_access"],
      issuer: `${root}/v2.0`,
      request_uri_parameter_supported: false,
      userinfo_endpoint: `${root}/openid/userinfo`,
      authorization_endpoint: `${root}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${root}/oauth2/v2.0/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${root}/oauth2/v2.0/logout`,
      claims_supported: ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
      tenant_region_scope: null,
      cloud_instance_name: "emulator",
      cloud_graph_host_name: "graph.windows.net",
      msgraph_host: "graph.microsoft.com",
      rbac_url: "https://pas.windows.net",
    },
  };
}

function instanceDiscovery(base: string, url: URL): Reply {
  let host = new URL(base).host;
  const endpoint = url.searchParams.get("authorization_endpoint");
  if (endpoint) {
    try {
      host = new URL(endpoint).host;
    } catch {
      // keep our own host
    }
  }
  return {
    status: 200,
    body: {
      tenant_discovery_endpoint: `${base}/common/v2.0/.well-known/openid-configuration`,
      "api-version": "1.1",
      metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
    },
  };
}

/** Every name requestOperation can return: what request counts are keyed by and fault `operations` may list. */
export const DATA_PLANE_OPERATIONS = [
  "list-keys", "get-key", "delete-key", "create-key", "import-key", "rotate-key", "list-key-versions", "update-key",
  "sign", "verify", "encrypt", "decrypt", "wrapkey", "unwrapkey",
  "list-deleted-keys", "get-deleted-key", "recover-deleted-key", "purge-deleted-key",
  "list-certificates", "get-certificate", "create-certificate", "get-certificate-operation", "get-certificate-policy", "list-certificate-versions",
  "list-secrets", "get-secret", "set-secret", "delete-secret", "list-secret-versions",
  "list-deleted-secrets", "get-deleted-secret", "recover-deleted-secret", "purge-deleted-secret",
  "get-random-bytes", "other",
] as const;
export type DataPlaneOperation = (typeof DATA_PLANE_OPERATIONS)[number];

/**
 * The operation a data-plane request asks for, named after the REST API's operation ("get-key", "sign",
 * "list-key-versions" ...), from the method and path alone so that counting costs no more than a few compares.
 */
export function requestOperation(method: string, segments: string[]): DataPlaneOperation {
  const [collection, name, third, fourth] = segments;
  const listing = name === undefined || name === "";
  switch (collection) {
    case "keys":
      if (listing) return "list-keys";
      if (third === undefined) return method === "DELETE" ? "delete-key" : method === "PUT" ? "import-key" : "get-key";
      if (fourth === undefined) {
        if (third === "create") return "create-key";
        if (third === "rotate") return "rotate-key";
        if (third === "versions") return "list-key-versions";
        return method === "PATCH" ? "update-key" : "get-key";
      }
      return CRYPTO_ROUTES[fourth] ? (fourth as DataPlaneOperation) : "other";
    case "deletedkeys":
      if (listing) return "list-deleted-keys";
      if (third === "recover") return "recover-deleted-key";
      return method === "DELETE" ? "purge-deleted-key" : "get-deleted-key";
    case "certificates":
      if (listing) return "list-certificates";
      if (fourth === undefined && third === "create") return "create-certificate";
      if (fourth === undefined && third === "pending") return "get-certificate-operation";
      if (fourth === undefined && third === "policy") return "get-certificate-policy";
      return third === "versions" ? "list-certificate-versions" : "get-certificate";
    case "secrets":
      if (listing) return "list-secrets";
      if (third === undefined) return method === "DELETE" ? "delete-secret" : method === "PUT" ? "set-secret" : "get-secret";
      return third === "versions" && fourth === undefined ? "list-secret-versions" : "get-secret";
    case "deletedsecrets":
      if (listing) return "list-deleted-secrets";
      if (third === "recover") return "recover-deleted-secret";
      return method === "DELETE" ? "purge-deleted-secret" : "get-deleted-secret";
    case "rng":
      return "get-random-bytes";
    default:
      return "other";
  }
}

const OPERATION_PERMISSION: ReadonlyMap<string, string> = new Map(
  Object.entries(PERMISSIONS).flatMap(([permission, operations]) => operations.map((operation) => [operation, permission] as const)),
);

/** Checks a deny list (emulator option `deny`, CLI --deny): only permission names of PERMISSIONS. */
export function parsePermissions(deny: readonly string[] | undefined): Set<string> {
  if (deny === undefined) return new Set();
  if (!Array.isArray(deny)) throw new Error("deny must be a list of permission names");
  const unknown = deny.filter((p) => !Object.hasOwn(PERMISSIONS, p));
  if (unknown.length > 0) throw new Error(`unknown permission(s) ${unknown.map((p) => `'${p}'`).join(", ")}; known: ${Object.keys(PERMISSIONS).join(", ")}`);
  return new Set(deny);
}

function countRequest(state: VaultState, operation: string, segments: string[]): void {
  state.requestCounts.set(operation, (state.requestCounts.get(operation) ?? 0) + 1);
  const name = segments[1];
  if (!name || segments[0] === "rng") return;
  const key = name.toLowerCase();
  let counts = state.requestCountsByName.get(key);
  if (!counts) state.requestCountsByName.set(key, (counts = new Map()));
  counts.set(operation, (counts.get(operation) ?? 0) + 1);
}

const DATA_PLANE_COLLECTIONS = new Set(["keys", "deletedkeys", "certificates", "deletedcertificates", "secrets", "deletedsecrets", "rng"]);

/** Answers the identity-provider paths, or returns undefined for data-plane paths. */
async function identityProvider(state: VaultState, req: IncomingMessage, url: URL, base: string, segments: string[]): Promise<Reply | undefined> {
  const [tenant, a, b, c, d] = segments;
  if (!tenant || DATA_PLANE_COLLECTIONS.has(tenant)) return undefined;
  if (a === "oauth2" && b === "v2.0" && c === "token" && d === undefined) {
    if (req.method !== "POST") return oauthError(405, "invalid_request", 900561, "The endpoint only accepts POST requests.");
    return clientCredentialsToken(state, await readBody(req), req.headers["content-type"]);
  }
  if (a === "v2.0" && b === ".well-known" && c === "openid-configuration" && d === undefined) return openIdConfiguration(base, tenant);
  if (a === ".well-known" && b === "openid-configuration" && c === undefined) return openIdConfiguration(base, tenant);
  if (a === "discovery" && b === "instance" && c === undefined) return instanceDiscovery(base, url);
  if (a === "discovery" && b === "v2.0" && c === "keys" && d === undefined) return { status: 200, body: { keys: [] } };
  return undefined;
}

export function createHttpsHandler(state: VaultState): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const started = performance.now();
    void (async () => {
      let reply: Reply;
      const host = req.headers.host ?? "127.0.0.1";
      const base = `https://${host}`;
      const url = new URL(req.url ?? "/", base);
      let segments: string[];
      try {
        segments = url.pathname.split("/").slice(1).map((s) => decodeURIComponent(s));
      } catch {
        send(req, res, errorReply(badParameter("The request URI is not valid.")));
        return;
      }
      try {
        const identity = await identityProvider(state, req, url, base, segments);
        if (identity) {
          send(req, res, identity);
          log.debug(`emulator: ${req.method} ${url.pathname} -> ${identity.status}`);
          return;
        }
        const operation = requestOperation(req.method ?? "GET", segments);
        countRequest(state, operation, segments);
        // setFaults() may replace the injector while this request is held: it keeps the faults it drew.
        const faults = state.faults;
        const fault = faults.next(operation);
        if (fault === "stall") {
          log.debug(`emulator: ${req.method} ${url.pathname} -> held for ${faults.stallMs} ms (injected)`);
          // Unref'd: a stalled request never keeps the process alive after close().
          await delay(faults.stallMs, undefined, { ref: false });
          if (req.socket.destroyed) {
            log.debug(`emulator: ${req.method} ${url.pathname}: the client left during the stall`);
            return;
          }
        }
        if (fault === "drop") {
          log.debug(`emulator: ${req.method} ${url.pathname} -> dropped connection (injected)`);
          req.socket.destroy();
          return;
        }
        if (fault === "throttle") {
          reply = {
            status: 429,
            body: new KeyVaultError(429, "Throttled", "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached").body(),
            headers: { "Retry-After": String(faults.retryAfterSeconds) },
          };
        } else if (fault === "unavailable") {
          reply = { status: 503, body: new KeyVaultError(503, "ServiceUnavailable", "The service is temporarily unavailable. Please retry later.").body() };
        } else {
          const raw = await readBody(req);
          const caller = state.tokens.verify(req.headers.authorization);
          const apiVersion = url.searchParams.get("api-version");
          if (!apiVersion) throw badParameter("The 'api-version' query parameter is missing.");
          if (!API_VERSION.test(apiVersion)) throw badParameter(`The specified version (${apiVersion}) is not recognized. Consider using the latest supported version (2025-07-01).`);
          const permission = OPERATION_PERMISSION.get(operation);
          if (permission && state.denied.has(permission)) throw forbiddenByPolicy(permission, caller, state.managedHsm ? "emulator-hsm" : "emulator");
          reply = await route(state, req, url, base, segments, raw);
        }
      } catch (error) {
        if (error instanceof KeyVaultError) {
          reply = errorReply(error);
        } else {
          log.error(`emulator: ${req.method} ${url.pathname}: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
          reply = errorReply(new KeyVaultError(500, "InternalServerError", "The emulator failed to process the request."));
        }
      }
      if (state.latencyMs > 0) await delay(state.latencyMs);
      send(req, res, reply);
      log.debug(`emulator: ${req.method} ${url.pathname} -> ${reply.status} (${(performance.now() - started).toFixed(1)} ms)`);
    })().catch((error: unknown) => {
      log.error(`emulator: request handling failed: ${error instanceof Error ? error.message : String(error)}`);
      if (!res.headersSent) res.destroy();
    });
  };
}

// ---- App Service managed identity (IDENTITY_ENDPOINT / IDENTITY_HEADER), plain HTTP on loopback ----

export const IDENTITY_PATH = "/msi/token";

export function createIdentityHandler(state: VaultState): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const reply = ((): Reply => {
      if (url.pathname !== IDENTITY_PATH) return { status: 404, body: { statusCode: 404, message: `No endpoint at ${url.pathname}; use ${IDENTITY_PATH}.` } };
      if (req.method !== "GET") return { status: 405, body: { statusCode: 405, message: "Only GET is supported." } };
      const header = req.headers["x-identity-header"];
      if (typeof header !== "string" || header !== state.identityHeader) {
        return { status: 401, body: { statusCode: 401, message: "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER." } };
      }
      const apiVersion = url.searchParams.get("api-version");
      if (apiVersion !== "2019-08-01") return { status: 400, body: { statusCode: 400, message: `Unsupported api-version '${apiVersion ?? ""}'; use 2019-08-01.` } };
      const resource = url.searchParams.get("resource");
      if (!resource) return { status: 400, body: { statusCode: 400, message: "The 'resource' query parameter is required." } };
      const clientId = url.searchParams.get("client_id") ?? state.tokens.principalId;
      const token = state.tokens.issue(resourceFromScope(resource), clientId);
      state.tokensIssued++;
      return {
        status: 200,
        body: { access_token: token.accessToken, expires_on: String(token.expiresOn), resource, token_type: "Bearer", client_id: clientId },
      };
    })();
    req.resume();
    send(req, res, reply);
    log.debug(`emulator identity: ${req.method} ${url.pathname} -> ${reply.status}`);
  };
}
