// The vault's secrets: versions, soft delete, recover and purge, and the REST shapes (secrets.json: SecretBundle,
// SecretItem, DeletedSecretBundle). A certificate's own secret (the `sid` of a CertificateBundle) is not stored
// here: server.ts answers for it from the certificate, marked `managed`, so the two can never disagree.
import { randomBytes } from "node:crypto";
import { badParameter, deletedNameConflict, deletedSecretNotFound, secretNotFound } from "./errors.ts";
import { NameMap, nowSeconds } from "./keystore.ts";

export interface SecretVersion {
  name: string;
  version: string;
  value: string;
  contentType?: string;
  tags?: Record<string, string>;
  enabled: boolean;
  nbf?: number;
  exp?: number;
  created: number;
  updated: number;
  /** For a certificate's secret: the certificate's key id. */
  kid?: string;
  managed?: boolean;
}

export interface SetSecretRequest {
  value: string;
  contentType?: string;
  tags?: Record<string, string>;
  enabled?: boolean;
  nbf?: number;
  exp?: number;
}

export interface DeletedSecret {
  latest: SecretVersion;
  deletedDate: number;
  scheduledPurgeDate: number;
}

const RECOVERY_LEVEL = "Recoverable+Purgeable";
const RECOVERABLE_DAYS = 90;
const SECRET_NAME = /^[0-9a-zA-Z-]{1,127}$/;
/** The service's limit on a secret's value: 25 KB. */
const MAX_VALUE_CHARS = 25 * 1024;

export class SecretStore {
  private readonly secrets = new NameMap<SecretVersion[]>();
  private readonly deleted = new NameMap<{ versions: SecretVersion[]; deletedDate: number; scheduledPurgeDate: number }>();

  set(name: string, request: SetSecretRequest): SecretVersion {
    if (!SECRET_NAME.test(name)) throw badParameter(`The request URI contains an invalid name: ${name}`);
    if (this.deleted.has(name)) throw deletedNameConflict("Secret", name);
    if (request.value.length > MAX_VALUE_CHARS) throw badParameter(`The secret value is too long: at most ${MAX_VALUE_CHARS} characters.`);
    const created = nowSeconds();
    const version: SecretVersion = {
      name: this.secrets.spelling(name) ?? name,
      version: randomBytes(16).toString("hex"),
      value: request.value,
      enabled: request.enabled ?? true,
      created,
      updated: created,
    };
    if (request.contentType !== undefined) version.contentType = request.contentType;
    if (request.tags) version.tags = request.tags;
    if (request.nbf !== undefined) version.nbf = request.nbf;
    if (request.exp !== undefined) version.exp = request.exp;
    const versions = this.secrets.get(name) ?? [];
    versions.push(version);
    this.secrets.set(name, versions);
    return version;
  }

  /** An empty or absent version means the latest one. */
  get(name: string, version?: string): SecretVersion {
    const versions = this.secrets.get(name);
    if (!versions) throw secretNotFound(name, version || undefined);
    if (!version) return versions[versions.length - 1]!;
    const found = versions.find((v) => v.version === version);
    if (!found) throw secretNotFound(name, version);
    return found;
  }

  has(name: string): boolean {
    return this.secrets.has(name);
  }

  isDeleted(name: string): boolean {
    return this.deleted.has(name);
  }

  names(): string[] {
    return this.secrets.names();
  }

  versions(name: string): SecretVersion[] {
    const versions = this.secrets.get(name);
    if (!versions) throw secretNotFound(name);
    return versions;
  }

  delete(name: string): DeletedSecret {
    const versions = this.secrets.get(name);
    if (!versions) throw secretNotFound(name);
    this.secrets.delete(name);
    const deletedDate = nowSeconds();
    const entry = { versions, deletedDate, scheduledPurgeDate: deletedDate + RECOVERABLE_DAYS * 86400 };
    this.deleted.set(name, entry, versions[0]!.name);
    return { latest: versions[versions.length - 1]!, deletedDate, scheduledPurgeDate: entry.scheduledPurgeDate };
  }

  getDeleted(name: string): DeletedSecret {
    const entry = this.deleted.get(name);
    if (!entry) throw deletedSecretNotFound(name);
    return { latest: entry.versions[entry.versions.length - 1]!, deletedDate: entry.deletedDate, scheduledPurgeDate: entry.scheduledPurgeDate };
  }

  deletedNames(): string[] {
    return this.deleted.names();
  }

  purge(name: string): void {
    if (!this.deleted.delete(name)) throw deletedSecretNotFound(name);
  }

  recover(name: string): SecretVersion {
    const entry = this.deleted.get(name);
    if (!entry) throw deletedSecretNotFound(name);
    this.deleted.delete(name);
    this.secrets.set(name, entry.versions, entry.versions[0]!.name);
    return entry.versions[entry.versions.length - 1]!;
  }
}

// ---- REST shapes ----

function secretAttributes(s: SecretVersion): Record<string, unknown> {
  const attributes: Record<string, unknown> = { enabled: s.enabled };
  if (s.nbf !== undefined) attributes.nbf = s.nbf;
  if (s.exp !== undefined) attributes.exp = s.exp;
  attributes.created = s.created;
  attributes.updated = s.updated;
  attributes.recoveryLevel = RECOVERY_LEVEL;
  attributes.recoverableDays = RECOVERABLE_DAYS;
  return attributes;
}

export const secretId = (base: string, s: SecretVersion): string => `${base}/secrets/${s.name}/${s.version}`;

export function secretBundle(base: string, s: SecretVersion): Record<string, unknown> {
  const bundle: Record<string, unknown> = { value: s.value, id: secretId(base, s) };
  if (s.contentType !== undefined) bundle.contentType = s.contentType;
  bundle.attributes = secretAttributes(s);
  if (s.tags) bundle.tags = s.tags;
  if (s.kid) bundle.kid = s.kid;
  if (s.managed) bundle.managed = true;
  return bundle;
}

export function secretItem(base: string, s: SecretVersion, withVersion: boolean): Record<string, unknown> {
  const item: Record<string, unknown> = { id: withVersion ? secretId(base, s) : `${base}/secrets/${s.name}`, attributes: secretAttributes(s) };
  if (s.tags) item.tags = s.tags;
  if (s.contentType !== undefined) item.contentType = s.contentType;
  if (s.managed) item.managed = true;
  return item;
}

export function deletedSecretBundle(base: string, d: DeletedSecret): Record<string, unknown> {
  return { recoveryId: `${base}/deletedsecrets/${d.latest.name}`, deletedDate: d.deletedDate, scheduledPurgeDate: d.scheduledPurgeDate, ...secretBundle(base, d.latest) };
}

export function deletedSecretItem(base: string, d: DeletedSecret): Record<string, unknown> {
  return { recoveryId: `${base}/deletedsecrets/${d.latest.name}`, deletedDate: d.deletedDate, scheduledPurgeDate: d.scheduledPurgeDate, ...secretItem(base, d.latest, false) };
}
