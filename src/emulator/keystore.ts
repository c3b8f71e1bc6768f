// The vault's keys: versions, attributes, soft-deleted keys, and the JSON shapes (KeyBundle, KeyItem,
// DeletedKeyBundle) the REST API returns for them. Key material is made with node:crypto, asynchronously, so that
// many keys can be generated in parallel at start-up.
import { createECDH, createPrivateKey, createPublicKey, generateKeyPair, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import { promisify } from "node:util";
import { CURVES, KEY_TYPES, OCT_SIZES, RSA_SIZES, defaultKeyOps, type KeyFamily } from "./algorithms.ts";
import { badParameter, deletedKeyNotFound, deletedNameConflict, keyNotFound } from "./errors.ts";

const generateKeyPairAsync = promisify(generateKeyPair);

export interface KeyMaterial {
  family: KeyFamily;
  privateKey?: KeyObject;
  publicKey?: KeyObject;
  /** RSA modulus size in bits. */
  modulusBits?: number;
  /** Key Vault curve name for EC keys. */
  curve?: string;
  /** EC private scalar and uncompressed public point, for @noble/curves. */
  ecPrivate?: Uint8Array;
  ecPublic?: Uint8Array;
  /** AES key bytes for oct keys. */
  octKey?: Buffer;
  /** Public JWK members: n/e or crv/x/y. */
  jwk: Record<string, string>;
}

export interface KeyVersion {
  name: string;
  version: string;
  kty: string;
  keyOps: string[];
  enabled: boolean;
  /** Seconds since the epoch, as the REST API carries them. */
  nbf?: number;
  exp?: number;
  created: number;
  updated: number;
  tags?: Record<string, string>;
  material: KeyMaterial;
}

export interface CreateKeyRequest {
  kty: string;
  keySize?: number;
  curve?: string;
  keyOps?: string[];
  enabled?: boolean;
  nbf?: number;
  exp?: number;
  tags?: Record<string, string>;
}

interface DeletedKey {
  versions: KeyVersion[];
  deletedDate: number;
  scheduledPurgeDate: number;
}

const RECOVERY_LEVEL = "Recoverable+Purgeable";
const RECOVERABLE_DAYS = 90;
const KEY_NAME = /^[0-9a-zA-Z-]{1,127}$/;

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);
const newVersion = (): string => randomBytes(16).toString("hex");

/** Parses one `name:TYPE:SIZE` entry of --keys, e.g. `signer:RSA:2048`, `ec:EC:P-256`, `aes:oct-HSM:256`. */
export function parseKeySpec(spec: string): { name: string; request: CreateKeyRequest } {
  const parts = spec.trim().split(":");
  if (parts.length !== 3) throw new Error(`key spec '${spec}': expected name:TYPE:SIZE, e.g. signer:RSA:2048 or ec:EC:P-256`);
  const [name, kty, size] = parts as [string, string, string];
  if (!KEY_NAME.test(name)) throw new Error(`key spec '${spec}': key names are 1-127 letters, digits and dashes`);
  const family = KEY_TYPES[kty];
  if (!family) throw new Error(`key spec '${spec}': unknown key type '${kty}' (use RSA, EC, oct or their -HSM forms)`);
  if (family === "EC") {
    if (!CURVES[size]) throw new Error(`key spec '${spec}': unknown curve '${size}' (use ${Object.keys(CURVES).join(", ")})`);
    return { name, request: { kty, curve: size } };
  }
  const bits = Number(size);
  const allowed: readonly number[] = family === "RSA" ? RSA_SIZES : OCT_SIZES;
  if (!allowed.includes(bits)) throw new Error(`key spec '${spec}': ${kty} keys are ${allowed.join(", ")} bits`);
  return { name, request: { kty, keySize: bits } };
}

/** Splits a comma-separated --keys value. */
export function parseKeySpecs(specs: string): Array<{ name: string; request: CreateKeyRequest }> {
  return specs
    .split(",")
    .filter((s) => s.trim() !== "")
    .map(parseKeySpec);
}

async function generateMaterial(request: CreateKeyRequest): Promise<KeyMaterial> {
  const family = KEY_TYPES[request.kty];
  switch (family) {
    case "RSA": {
      const modulusBits = request.keySize ?? 2048;
      if (!(RSA_SIZES as readonly number[]).includes(modulusBits)) throw badParameter(`The specified RSA key size ${modulusBits} is not supported. Supported sizes: 2048, 3072, 4096.`);
      const { privateKey, publicKey } = await generateKeyPairAsync("rsa", { modulusLength: modulusBits, publicExponent: 0x10001 });
      const jwk = publicKey.export({ format: "jwk" });
      return { family, privateKey, publicKey, modulusBits, jwk: { n: jwk.n!, e: jwk.e! } };
    }
    case "EC": {
      const curve = request.curve ?? "P-256";
      const info = CURVES[curve];
      if (!info) throw badParameter(`The specified curve ${curve} is not supported. Supported curves: ${Object.keys(CURVES).join(", ")}.`);
      const { privateKey, publicKey } = await generateKeyPairAsync("ec", { namedCurve: info.openssl });
      const jwk = privateKey.export({ format: "jwk" });
      const x = Buffer.from(jwk.x!, "base64url");
      const y = Buffer.from(jwk.y!, "base64url");
      return {
        family,
        privateKey,
        publicKey,
        curve,
        ecPrivate: Buffer.from(jwk.d!, "base64url"),
        ecPublic: Buffer.concat([Buffer.from([4]), x, y]),
        jwk: { crv: curve, x: jwk.x!, y: jwk.y! },
      };
    }
    case "oct": {
      const bits = request.keySize ?? 256;
      if (!(OCT_SIZES as readonly number[]).includes(bits)) throw badParameter(`The specified oct key size ${bits} is not supported. Supported sizes: 128, 192, 256.`);
      return { family, octKey: randomBytes(bits / 8), jwk: {} };
    }
    default:
      throw badParameter(`The specified key type '${request.kty}' is not supported.`);
  }
}

const invalidJwk = (why: string): Error => badParameter(`The specified JSON Web Key is invalid: ${why}.`);

function jwkBytes(jwk: Record<string, unknown>, member: string): Buffer {
  const value = jwk[member];
  if (typeof value !== "string" || value === "" || !/^[A-Za-z0-9_\-+/]*={0,2}$/.test(value)) throw invalidJwk(`member '${member}' is missing or not base64url`);
  return Buffer.from(value, "base64url");
}

const toBigInt = (bytes: Buffer): bigint => (bytes.length === 0 ? 0n : BigInt(`0x${bytes.toString("hex")}`));

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
  }
  return result;
}

/**
 * An imported JWK's key material. OpenSSL accepts RSA components that do not belong together (it checks none of
 * them on import), so the CRT relations are checked here; an EC scalar must give the public point the JWK names.
 */
export function materialFromJwk(jwk: Record<string, unknown>): KeyMaterial {
  const kty = jwk.kty;
  const family = typeof kty === "string" ? KEY_TYPES[kty] : undefined;
  if (!family) throw invalidJwk(`'kty' must be one of ${Object.keys(KEY_TYPES).join(", ")}`);
  if (family === "RSA") {
    const [n, e, d, p, q, dp, dq, qi] = ["n", "e", "d", "p", "q", "dp", "dq", "qi"].map((m) => jwkBytes(jwk, m)) as Buffer[] as [Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer];
    const [N, E, D, P, Q, DP, DQ, QI] = [n, e, d, p, q, dp, dq, qi].map(toBigInt) as [bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint];
    const modulusBits = N.toString(2).length;
    if (!(RSA_SIZES as readonly number[]).includes(modulusBits)) throw invalidJwk(`an RSA key of ${modulusBits} bits is not supported (2048, 3072 or 4096)`);
    const consistent = P > 1n && Q > 1n && P * Q === N && DP === D % (P - 1n) && DQ === D % (Q - 1n) && (QI * Q) % P === 1n && modPow(modPow(2n, E, N), D, N) === 2n;
    if (!consistent) throw invalidJwk("the RSA private members do not belong to the modulus and exponent");
    const b64 = (b: Buffer): string => b.toString("base64url");
    const privateKey = createPrivateKey({ key: { kty: "RSA", n: b64(n), e: b64(e), d: b64(d), p: b64(p), q: b64(q), dp: b64(dp), dq: b64(dq), qi: b64(qi) }, format: "jwk" });
    const publicJwk = createPublicKey(privateKey).export({ format: "jwk" });
    return { family, privateKey, publicKey: createPublicKey(privateKey), modulusBits, jwk: { n: publicJwk.n!, e: publicJwk.e! } };
  }
  if (family === "EC") {
    const curve = jwk.crv;
    const info = typeof curve === "string" ? CURVES[curve] : undefined;
    if (!info) throw invalidJwk(`'crv' must be one of ${Object.keys(CURVES).join(", ")}`);
    const [x, y, d] = ["x", "y", "d"].map((m) => jwkBytes(jwk, m)) as [Buffer, Buffer, Buffer];
    const size = info.coordinateBytes;
    if (x.length !== size || y.length !== size || d.length !== size) throw invalidJwk(`the members of a ${curve as string} key are ${size} bytes each`);
    const point = Buffer.concat([Buffer.from([4]), x, y]);
    let derived: Buffer;
    try {
      const ecdh = createECDH(info.openssl);
      ecdh.setPrivateKey(d);
      derived = ecdh.getPublicKey();
    } catch {
      throw invalidJwk("'d' is not a valid private scalar for the curve");
    }
    if (derived.length !== point.length || !timingSafeEqual(derived, point)) throw invalidJwk("the EC private scalar does not match the public point");
    const b64 = (b: Buffer): string => b.toString("base64url");
    const privateKey = createPrivateKey({ key: { kty: "EC", crv: curve === "P-256K" ? "secp256k1" : (curve as string), x: b64(x), y: b64(y), d: b64(d) }, format: "jwk" });
    return { family, privateKey, publicKey: createPublicKey(privateKey), curve: curve as string, ecPrivate: d, ecPublic: point, jwk: { crv: curve as string, x: b64(x), y: b64(y) } };
  }
  const k = jwkBytes(jwk, "k");
  if (!(OCT_SIZES as readonly number[]).includes(k.length * 8)) throw invalidJwk(`an AES key of ${k.length * 8} bits is not supported (128, 192 or 256)`);
  return { family, octKey: k, jwk: {} };
}

/**
 * Key Vault object names are case-insensitive: `MyKey` and `mykey` are one key, which keeps the spelling it was first
 * created with in its kid and in listings.
 */
export class NameMap<V> {
  private readonly entries = new Map<string, { name: string; value: V }>();

  get(name: string): V | undefined {
    return this.entries.get(name.toLowerCase())?.value;
  }

  has(name: string): boolean {
    return this.entries.has(name.toLowerCase());
  }

  /** The stored spelling of `name`, or undefined when there is no such entry. */
  spelling(name: string): string | undefined {
    return this.entries.get(name.toLowerCase())?.name;
  }

  /** Keeps the entry's first spelling unless `spelling` is given (a recovered key keeps its own). */
  set(name: string, value: V, spelling?: string): void {
    const key = name.toLowerCase();
    this.entries.set(key, { name: spelling ?? this.entries.get(key)?.name ?? name, value });
  }

  delete(name: string): boolean {
    return this.entries.delete(name.toLowerCase());
  }

  /** Stored spellings, in the order the service lists them. */
  names(): string[] {
    return [...this.entries.values()].map((entry) => entry.name).sort(byLowerCaseName);
  }
}

export class KeyStore {
  private readonly keys = new NameMap<KeyVersion[]>();
  private readonly deleted = new NameMap<DeletedKey>();

  async create(name: string, request: CreateKeyRequest): Promise<KeyVersion> {
    if (!KEY_NAME.test(name)) throw badParameter(`The request URI contains an invalid name: ${name}`);
    if (this.deleted.has(name)) throw deletedNameConflict("Key", name);
    const family = KEY_TYPES[request.kty];
    if (!family) throw badParameter(`The specified key type '${request.kty}' is not supported.`);
    return this.add(name, request, await generateMaterial(request));
  }

  /**
   * PUT /keys/{name}: the caller's key as a new version (a new key when the name is free), as the service does; the
   * private members are checked against the public ones first.
   */
  import(name: string, request: CreateKeyRequest, jwk: Record<string, unknown>): KeyVersion {
    if (!KEY_NAME.test(name)) throw badParameter(`The request URI contains an invalid name: ${name}`);
    if (this.deleted.has(name)) throw deletedNameConflict("Key", name);
    return this.add(name, request, materialFromJwk(jwk));
  }

  private add(name: string, request: CreateKeyRequest, material: KeyMaterial): KeyVersion {
    const family = material.family;
    const created = nowSeconds();
    const version: KeyVersion = {
      name: this.keys.spelling(name) ?? name,
      version: newVersion(),
      kty: request.kty,
      keyOps: request.keyOps ?? defaultKeyOps(family),
      enabled: request.enabled ?? true,
      created,
      updated: created,
      material,
    };
    if (request.nbf !== undefined) version.nbf = request.nbf;
    if (request.exp !== undefined) version.exp = request.exp;
    if (request.tags) version.tags = request.tags;
    // create()'s deleted check ran before an await: repeat it so a concurrent delete cannot be overwritten.
    if (this.deleted.has(name)) throw deletedNameConflict("Key", name);
    const versions = this.keys.get(name) ?? [];
    versions.push(version);
    this.keys.set(name, versions);
    return version;
  }

  /** An empty or absent version means the latest one. */
  get(name: string, version?: string): KeyVersion {
    const versions = this.keys.get(name);
    if (!versions) throw keyNotFound(name, version || undefined);
    if (!version) return versions[versions.length - 1]!;
    const found = versions.find((v) => v.version === version);
    if (!found) throw keyNotFound(name, version);
    return found;
  }

  has(name: string): boolean {
    return this.keys.has(name);
  }

  /** Names in the order the service lists them. */
  names(): string[] {
    return this.keys.names();
  }

  versions(name: string): KeyVersion[] {
    const versions = this.keys.get(name);
    if (!versions) throw keyNotFound(name);
    return versions;
  }

  delete(name: string): { latest: KeyVersion; deletedDate: number; scheduledPurgeDate: number } {
    const versions = this.keys.get(name);
    if (!versions) throw keyNotFound(name);
    this.keys.delete(name);
    const deletedDate = nowSeconds();
    const entry = { versions, deletedDate, scheduledPurgeDate: deletedDate + RECOVERABLE_DAYS * 86400 };
    this.deleted.set(name, entry, versions[0]!.name);
    return { latest: versions[versions.length - 1]!, deletedDate, scheduledPurgeDate: entry.scheduledPurgeDate };
  }

  getDeleted(name: string): { latest: KeyVersion; deletedDate: number; scheduledPurgeDate: number } {
    const entry = this.deleted.get(name);
    if (!entry) throw deletedKeyNotFound(name);
    return { latest: entry.versions[entry.versions.length - 1]!, deletedDate: entry.deletedDate, scheduledPurgeDate: entry.scheduledPurgeDate };
  }

  deletedNames(): string[] {
    return this.deleted.names();
  }

  purge(name: string): void {
    if (!this.deleted.delete(name)) throw deletedKeyNotFound(name);
  }

  recover(name: string): KeyVersion {
    const entry = this.deleted.get(name);
    if (!entry) throw deletedKeyNotFound(name);
    this.deleted.delete(name);
    this.keys.set(name, entry.versions, entry.versions[0]!.name);
    return entry.versions[entry.versions.length - 1]!;
  }
}

// ---- REST shapes ----

export function keyAttributes(v: KeyVersion): Record<string, unknown> {
  const attributes: Record<string, unknown> = { enabled: v.enabled };
  if (v.nbf !== undefined) attributes.nbf = v.nbf;
  if (v.exp !== undefined) attributes.exp = v.exp;
  attributes.created = v.created;
  attributes.updated = v.updated;
  attributes.recoveryLevel = RECOVERY_LEVEL;
  attributes.recoverableDays = RECOVERABLE_DAYS;
  return attributes;
}

export const keyId = (base: string, v: KeyVersion): string => `${base}/keys/${v.name}/${v.version}`;

export function keyBundle(base: string, v: KeyVersion): Record<string, unknown> {
  const bundle: Record<string, unknown> = {
    key: { kid: keyId(base, v), kty: v.kty, key_ops: v.keyOps, ...v.material.jwk },
    attributes: keyAttributes(v),
  };
  if (v.tags) bundle.tags = v.tags;
  return bundle;
}

export function keyItem(base: string, v: KeyVersion, withVersion: boolean): Record<string, unknown> {
  const item: Record<string, unknown> = { kid: withVersion ? keyId(base, v) : `${base}/keys/${v.name}`, attributes: keyAttributes(v) };
  if (v.tags) item.tags = v.tags;
  return item;
}

export function deletedKeyBundle(base: string, d: { latest: KeyVersion; deletedDate: number; scheduledPurgeDate: number }): Record<string, unknown> {
  return {
    recoveryId: `${base}/deletedkeys/${d.latest.name}`,
    deletedDate: d.deletedDate,
    scheduledPurgeDate: d.scheduledPurgeDate,
    ...keyBundle(base, d.latest),
  };
}

export function deletedKeyItem(base: string, d: { latest: KeyVersion; deletedDate: number; scheduledPurgeDate: number }): Record<string, unknown> {
  return {
    recoveryId: `${base}/deletedkeys/${d.latest.name}`,
    deletedDate: d.deletedDate,
    scheduledPurgeDate: d.scheduledPurgeDate,
    ...keyItem(base, d.latest, false),
  };
}

/** Code-point order of lower-cased names: the order lists use, and the order their $skiptoken markers compare in. */
export function byLowerCaseName(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x < y ? -1 : x > y ? 1 : 0;
}
