// Creating, changing and destroying objects: C_GenerateKeyPair, C_GenerateKey, C_CreateObject, C_DestroyObject,
// C_SetAttributeValue, C_WrapKey and C_UnwrapKey. Token objects live in the vault (keys, their tags, stored
// certificates): this file reads the templates and the session's rules, the token (src/token/) changes the vault.
import { constants, publicEncrypt, randomBytes, X509Certificate } from "node:crypto";
import { checkUnwrappable, checkWrappable, localUnwrap, localWrap, usableSecret, vaultWrapAlgorithm, wrapMode, wrappedLength } from "../mechanisms/aes.ts";
import { hashByMechanism } from "../mechanisms/algorithms.ts";
import { keyPairRequest, keyRequest, readKeyAttributes, type KeyAttributes, type KeyPolicy } from "../mechanisms/key-generation.ts";
import { CKA, CKC, CKK, CKM, CKO, CKR, CKZ_DATA_SPECIFIED, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Attribute, Mechanism, OutRequest } from "../protocol/codec.ts";
import { privateKeyImport } from "../token/import.ts";
import { findObject, SessionObjects } from "./session-objects.ts";
import { AES_LENGTHS, GENERATED_BY_AES_KEY_GEN, type SecretKind, type SecretMaterial } from "../token/secret-key.ts";
import { ORIGIN_TAG } from "../token/tags.ts";
import { vaultFailure } from "../token/vault-errors.ts";
import type { VaultBackend, WrapAlgorithm } from "../vault/types.ts";
import { handleError } from "./operations.ts";
import { TemplateReader } from "../token/template.ts";
import type { FoundObject, KeyRequest, Token } from "../token/token.ts";
import { andThen, type Immediate } from "./immediate.ts";
import type { OutResult } from "./operations.ts";
import type { Session } from "./session.ts";

export interface GeneratedPair {
  publicHandle: number;
  privateHandle: number;
}

/** Generic secrets PKCS#11 programs make to wrap or derive with: up to 512 bytes here. */
const MAX_GENERIC_SECRET = 512;

export class KeyManagement {
  constructor(
    private readonly ulongSize: number,
    private readonly backend: VaultBackend,
    private readonly sessionObjects: SessionObjects,
  ) {}

  generateKeyPair(session: Session, mechanism: Mechanism, publicTemplate: Attribute[], privateTemplate: Attribute[]): Promise<GeneratedPair> {
    writable(session, "C_GenerateKeyPair");
    const request = keyPairRequest(mechanism, publicTemplate, privateTemplate, this.policy(session.token));
    return session.token.createKey(withOrigin(request, "generated"));
  }

  /**
   * CKM_AES_KEY_GEN and CKM_GENERIC_SECRET_KEY_GEN. CKA_TOKEN false (the default) makes a session key in this
   * helper; CKA_TOKEN true an AES key in the Managed HSM of a vault token.
   */
  generateKey(session: Session, mechanism: Mechanism, template: Attribute[]): Immediate<number> {
    const aes = mechanism.type === CKM.AES_KEY_GEN;
    if (!aes && mechanism.type !== CKM.GENERIC_SECRET_KEY_GEN) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${mechanismName(mechanism.type)} makes no secret key here`);
    if (mechanism.parameter.kind !== "none") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${mechanismName(mechanism.type)} takes no parameter`);
    const reader = new TemplateReader(template, this.ulongSize, "the C_GenerateKey template");
    if (reader.bool(CKA.TOKEN) === true) {
      if (!aes) throw reader.invalid(CKA.TOKEN, "true: generic secrets are session keys only here");
      writable(session, "C_GenerateKey");
      const attributes: KeyAttributes = { keyOps: new Set() };
      reader.expect(CKA.CLASS, [CKO.SECRET_KEY]);
      reader.expect(CKA.KEY_TYPE, [CKK.AES]);
      const length = reader.ulong(CKA.VALUE_LEN);
      if (length === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "CKM_AES_KEY_GEN needs CKA_VALUE_LEN (16, 24 or 32)");
      if (!(AES_LENGTHS as readonly number[]).includes(length)) throw reader.invalid(CKA.VALUE_LEN, `${length}: AES keys are 16, 24 or 32 bytes`);
      readKeyAttributes(reader, CKO.SECRET_KEY, CKK.AES, attributes);
      if (attributes.keyOps.has("sign") || attributes.keyOps.has("verify")) throw new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, "an AES key in Managed HSM encrypts, decrypts, wraps and unwraps; it does not sign");
      if (attributes.keyOps.size === 0) for (const operation of ["encrypt", "decrypt", "wrapKey", "unwrapKey"]) attributes.keyOps.add(operation);
      reader.finish([CKA.PRIVATE]);
      const request = withOrigin(keyRequest(attributes, { kty: "oct-HSM", keySize: (length * 8) as 128 | 192 | 256 }), "generated");
      return session.token.createSecretKey(request);
    }
    const secret = this.sessionSecret(reader, aes ? "AES" : "GENERIC", undefined, true);
    return this.sessionObjects.add(session.token, session.handle, secret);
  }

  /**
   * The rest of a session secret key's template. `value` is its bytes when the caller (C_CreateObject) or the vault
   * (C_UnwrapKey) gave them; otherwise they are drawn here.
   */
  private sessionSecret(reader: TemplateReader, kind: SecretKind | undefined, value: Buffer | undefined, generated: boolean) {
    reader.expect(CKA.CLASS, [CKO.SECRET_KEY]);
    const keyType = reader.expect(CKA.KEY_TYPE, [CKK.AES, CKK.GENERIC_SECRET]);
    const resolvedKind: SecretKind = kind ?? (keyType === CKK.GENERIC_SECRET ? "GENERIC" : keyType === CKK.AES ? "AES" : "AES");
    if (kind && keyType !== undefined && (keyType === CKK.AES) !== (kind === "AES")) throw reader.invalid(CKA.KEY_TYPE, "does not fit the mechanism", CKR.TEMPLATE_INCONSISTENT);
    const length = reader.ulong(CKA.VALUE_LEN);
    const size = value?.length ?? length;
    if (size === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "a secret key needs CKA_VALUE_LEN");
    if (length !== undefined && value && length !== value.length) throw reader.invalid(CKA.VALUE_LEN, `${length} differs from the key's ${value.length} bytes`, CKR.TEMPLATE_INCONSISTENT);
    if (resolvedKind === "AES" && !(AES_LENGTHS as readonly number[]).includes(size)) throw reader.invalid(CKA.VALUE_LEN, `${size}: AES keys are 16, 24 or 32 bytes`);
    if (resolvedKind === "GENERIC" && (size < 1 || size > MAX_GENERIC_SECRET)) throw reader.invalid(CKA.VALUE_LEN, `${size}: generic secrets here are 1 to ${MAX_GENERIC_SECRET} bytes`);
    const label = reader.text(CKA.LABEL) ?? "";
    const id = reader.bytes(CKA.ID);
    const isPrivate = reader.bool(CKA.PRIVATE) ?? true;
    // Secret keys are sensitive unless asked otherwise, and may be wrapped unless asked otherwise.
    const sensitive = reader.bool(CKA.SENSITIVE) ?? true;
    const extractable = reader.bool(CKA.EXTRACTABLE) ?? true;
    const generic = resolvedKind === "GENERIC";
    const can = {
      encrypt: !generic && (reader.bool(CKA.ENCRYPT) ?? true),
      decrypt: !generic && (reader.bool(CKA.DECRYPT) ?? true),
      wrap: !generic && (reader.bool(CKA.WRAP) ?? true),
      unwrap: !generic && (reader.bool(CKA.UNWRAP) ?? true),
    };
    const startDate = reader.date(CKA.START_DATE);
    const endDate = reader.date(CKA.END_DATE);
    reader.require(CKA.TOKEN, false, "set CKA_TOKEN true only for an AES key in a Managed HSM (C_GenerateKey)");
    reader.require(CKA.DERIVE, false, "this module derives no keys");
    reader.require(CKA.SIGN, false, "secret keys here do not sign (no HMAC)");
    reader.require(CKA.VERIFY, false, "secret keys here do not verify (no HMAC)");
    reader.require(CKA.COPYABLE, false, "objects are not copied");
    reader.require(CKA.TRUSTED, false, "only a security officer could set it");
    reader.require(CKA.WRAP_WITH_TRUSTED, false, "no key here is trusted");
    reader.finish([CKA.MODIFIABLE, CKA.DESTROYABLE]);
    const secret: SecretMaterial = {
      kind: resolvedKind,
      length: size,
      can,
      value: value ? Buffer.from(value) : randomBytes(size),
      sensitive,
      extractable,
      alwaysSensitive: generated && sensitive,
      neverExtractable: generated && !extractable,
      ...(generated && !value ? { generatedBy: resolvedKind === "AES" ? GENERATED_BY_AES_KEY_GEN : CKM.GENERIC_SECRET_KEY_GEN } : {}),
    };
    return { secret, identity: { label, ...(id ? { id: Buffer.from(id) } : {}) }, isPrivate, ...(startDate ? { startDate } : {}), ...(endDate ? { endDate } : {}) };
  }

  createObject(session: Session, template: Attribute[]): Promise<number> {
    const reader = new TemplateReader(template, this.ulongSize, "the C_CreateObject template");
    const objectClass = reader.ulong(CKA.CLASS);
    if (objectClass === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "C_CreateObject needs CKA_CLASS");
    switch (objectClass) {
      case CKO.CERTIFICATE:
        return this.createCertificate(session, reader);
      case CKO.SECRET_KEY: {
        const value = reader.bytes(CKA.VALUE);
        if (value === undefined || value.length === 0) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "a secret key object needs CKA_VALUE");
        const key = this.sessionSecret(reader, undefined, value, false);
        return Promise.resolve(this.sessionObjects.add(session.token, session.handle, key));
      }
      case CKO.PRIVATE_KEY: {
        const { request, imported } = privateKeyImport(reader, this.policy(session.token));
        writable(session, "C_CreateObject");
        return session.token.createKey(withOrigin(request, "imported"), imported).then((created) => created.privateHandle);
      }
      default:
        throw reader.invalid(CKA.CLASS, `0x${objectClass.toString(16)}: this token stores certificates (CKO_CERTIFICATE), imports private keys (CKO_PRIVATE_KEY) and holds session secret keys (CKO_SECRET_KEY); public keys come with their private key`);
    }
  }

  private createCertificate(session: Session, reader: TemplateReader): Promise<number> {
    reader.expect(CKA.CERTIFICATE_TYPE, [CKC.X_509], CKR.ATTRIBUTE_VALUE_INVALID);
    const der = reader.bytes(CKA.VALUE);
    if (der === undefined || der.length === 0) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "a certificate object needs CKA_VALUE (the DER certificate)");
    try {
      new X509Certificate(der);
    } catch (error) {
      throw reader.invalid(CKA.VALUE, `is not a DER X.509 certificate: ${(error as Error).message}`);
    }
    const label = reader.text(CKA.LABEL);
    const id = reader.bytes(CKA.ID);
    reader.require(CKA.TOKEN, true, "certificates are stored in the vault, so they are token objects");
    reader.require(CKA.PRIVATE, false, "certificates are public objects");
    reader.require(CKA.TRUSTED, false, "only a security officer could set it");
    // Fields the certificate itself holds: a template may repeat them.
    reader.finish([CKA.SUBJECT, CKA.ISSUER, CKA.SERIAL_NUMBER, CKA.CERTIFICATE_CATEGORY, CKA.MODIFIABLE, CKA.START_DATE, CKA.END_DATE, CKA.URL, CKA.HASH_OF_SUBJECT_PUBLIC_KEY, CKA.HASH_OF_ISSUER_PUBLIC_KEY, CKA.JAVA_MIDP_SECURITY_DOMAIN, CKA.CHECK_VALUE]);
    writable(session, "C_CreateObject");
    return session.token.storeCertificate(Buffer.from(der), { ...(label !== undefined ? { label } : {}), ...(id ? { id: Buffer.from(id) } : {}) });
  }

  destroyObject(session: Session, handle: number): Immediate<void> {
    if (SessionObjects.owns(handle)) {
      // Session objects go from any session, read-only ones included.
      this.sessionObjects.get(handle, session.token);
      this.sessionObjects.destroy(handle);
      return;
    }
    return andThen(session.token.object(handle), () => {
      writable(session, "C_DestroyObject");
      return session.token.destroy(handle);
    });
  }

  setAttributeValue(session: Session, handle: number, template: Attribute[]): Immediate<void> {
    return andThen(findObject(this.sessionObjects, session, handle), ({ object }) => {
      const reader = new TemplateReader(template, this.ulongSize, "the C_SetAttributeValue template");
      const label = reader.text(CKA.LABEL);
      const id = reader.bytes(CKA.ID);
      for (const { type } of template) {
        if (type === CKA.LABEL || type === CKA.ID) continue;
        throw reader.invalid(type, object.attributes.has(type) ? "cannot be changed: only CKA_LABEL and CKA_ID can" : "is not an attribute of this object", object.attributes.has(type) ? CKR.ATTRIBUTE_READ_ONLY : CKR.ATTRIBUTE_TYPE_INVALID);
      }
      const change = { ...(label !== undefined ? { label } : {}), ...(id ? { id: Buffer.from(id) } : {}) };
      if (SessionObjects.owns(handle)) return this.sessionObjects.setIdentity(handle, session.token, change);
      writable(session, "C_SetAttributeValue");
      if (label === undefined && id === undefined) return;
      return session.token.setIdentity(handle, change);
    });
  }

  // ---- wrapping ------------------------------------------------------------------------------------------

  /**
   * Wraps a session secret key: with an AES key (RFC 3394 / 5649) in the HSM or with node:crypto, or with an RSA
   * public key locally (OAEP, PKCS#1 v1.5). A vault key itself is never wrapped out: CKR_KEY_UNEXTRACTABLE.
   */
  wrapKey(session: Session, mechanism: Mechanism, wrappingKey: number, key: number, out: OutRequest): Immediate<OutResult> {
    return andThen(this.objectFor(session, wrappingKey, CKR.WRAPPING_KEY_HANDLE_INVALID), (wrapping) =>
      andThen(this.objectFor(session, key, CKR.KEY_HANDLE_INVALID), (wrapped) => {
        const value = wrapped.secret?.value;
        if (!value) throw new Pkcs11Error(CKR.KEY_UNEXTRACTABLE, `object ${key} lives in the vault and never leaves it; only session secret keys can be wrapped`);
        if (!wrapped.secret!.extractable) throw new Pkcs11Error(CKR.KEY_UNEXTRACTABLE, `session key ${key} has CKA_EXTRACTABLE false`);
        const plan = this.wrapPlan(session, mechanism, wrapping, "wrap");
        const length = plan.wrappedLength(value.length);
        if (!out.present) return { rv: CKR.OK, length };
        if (out.capacity < length) return { rv: CKR.BUFFER_TOO_SMALL, length };
        return andThen(plan.wrap(value), (bytes) => ({ rv: CKR.OK, length: bytes.length, data: bytes }));
      }),
    );
  }

  unwrapKey(session: Session, mechanism: Mechanism, unwrappingKey: number, wrapped: Buffer, template: Attribute[]): Immediate<number> {
    return andThen(this.objectFor(session, unwrappingKey, CKR.UNWRAPPING_KEY_HANDLE_INVALID), (unwrapping) => {
      const plan = this.wrapPlan(session, mechanism, unwrapping, "unwrap");
      // The template is checked before the HSM is asked, so a bad template costs no remote call. The key's size is
      // known only once it is unwrapped: a stated CKA_VALUE_LEN stands in for it, else any valid size does.
      const stated = new TemplateReader(template, this.ulongSize, "the C_UnwrapKey template").ulong(CKA.VALUE_LEN);
      this.sessionSecret(new TemplateReader(template, this.ulongSize, "the C_UnwrapKey template"), undefined, stated === undefined ? Buffer.alloc(16) : undefined, false);
      return andThen(plan.unwrap(Buffer.from(wrapped)), (value) => {
        const key = this.sessionSecret(new TemplateReader(template, this.ulongSize, "the C_UnwrapKey template"), undefined, value, false);
        return this.sessionObjects.add(session.token, session.handle, key);
      });
    });
  }

  private objectFor(session: Session, handle: number, invalid: number): Immediate<FoundObject> {
    const relabel = (error: unknown): unknown => (error instanceof Pkcs11Error && error.rv === CKR.OBJECT_HANDLE_INVALID ? handleError(error, invalid) : error);
    try {
      const found = findObject(this.sessionObjects, session, handle);
      return found instanceof Promise ? found.catch((error: unknown) => Promise.reject(relabel(error))) : found;
    } catch (error) {
      throw relabel(error);
    }
  }

  private wrapPlan(session: Session, mechanism: Mechanism, found: FoundObject, direction: "wrap" | "unwrap") {
    const label = session.token.label;
    const typeError = direction === "wrap" ? CKR.WRAPPING_KEY_TYPE_INCONSISTENT : CKR.UNWRAPPING_KEY_TYPE_INCONSISTENT;
    const name = mechanismName(mechanism.type);
    if (mechanism.type === CKM.AES_KEY_WRAP || mechanism.type === CKM.AES_KEY_WRAP_KWP) {
      const mode = wrapMode(mechanism);
      const secret = found.secret;
      if (!secret) throw new Pkcs11Error(typeError, `${name} needs an AES key to ${direction} with`);
      const length = usableSecret(secret, direction, label);
      const algorithm = vaultWrapAlgorithm(mode, length);
      return {
        wrappedLength: (keyLength: number) => wrappedLength(mode, keyLength),
        wrap: (value: Buffer): Immediate<Buffer> => {
          checkWrappable(mode, value);
          if (secret.value) return localWrap(mode, secret.value, value);
          return this.backend.wrapKey(secret.key!, algorithm, value).catch((error: unknown) => Promise.reject(vaultFailure(error, label, "wrap")));
        },
        unwrap: (wrapped: Buffer): Immediate<Buffer> => {
          checkUnwrappable(mode, wrapped);
          if (secret.value) return localUnwrap(mode, secret.value, wrapped);
          return this.backend.unwrapKey(secret.key!, algorithm, wrapped).catch((error: unknown) => Promise.reject(vaultFailure(error, label, "unwrap")));
        },
      };
    }
    if (mechanism.type === CKM.RSA_PKCS_OAEP || mechanism.type === CKM.RSA_PKCS) {
      const material = found.material;
      const wanted = direction === "wrap" ? "public" : "private";
      if (!material || material.kind !== "RSA" || found.object.kind !== wanted) throw new Pkcs11Error(typeError, `${name} ${direction}s with an RSA ${wanted} key`);
      if (!material.can[direction]) throw new Pkcs11Error(CKR.KEY_FUNCTION_NOT_PERMITTED, `${label}: the key's key_ops (${material.key.keyOps.join(", ") || "none"}) do not allow ${direction}Key`);
      const oaep = mechanism.type === CKM.RSA_PKCS_OAEP ? oaepHash(mechanism) : undefined;
      const algorithm: WrapAlgorithm = oaep === undefined ? "RSA1_5" : oaep === "sha1" ? "RSA-OAEP" : "RSA-OAEP-256";
      const modulus = material.signatureLength;
      return {
        wrappedLength: () => modulus,
        // Wrapping needs only the public key: it happens here, and only the vault can unwrap.
        wrap: (value: Buffer): Buffer => {
          const room = oaep === undefined ? modulus - 11 : modulus - 2 * (oaep === "sha1" ? 20 : 32) - 2;
          if (value.length > room) throw new Pkcs11Error(CKR.KEY_SIZE_RANGE, `${name}: a ${value.length}-byte key does not fit this RSA key`);
          return publicEncrypt({ key: material.publicKey, padding: oaep ? constants.RSA_PKCS1_OAEP_PADDING : constants.RSA_PKCS1_PADDING, ...(oaep ? { oaepHash: oaep } : {}) }, value);
        },
        unwrap: (wrapped: Buffer): Promise<Buffer> => {
          if (wrapped.length !== modulus) return Promise.reject(new Pkcs11Error(CKR.WRAPPED_KEY_LEN_RANGE, `${name}: the wrapped key is ${wrapped.length} bytes, the modulus ${modulus}`));
          return this.backend.unwrapKey(material.key, algorithm, wrapped).catch((error: unknown) => Promise.reject(vaultFailure(error, label, "unwrap")));
        },
      };
    }
    throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${name} does not ${direction} keys here (CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_KWP, CKM_RSA_PKCS_OAEP, CKM_RSA_PKCS do)`);
  }

  private policy(token: Token): KeyPolicy {
    const hsm = token.model === "Managed HSM" || (token.slot.kind === "vault" && token.slot.hsm);
    return { hsm, ulongSize: this.ulongSize };
  }
}

/** Token objects change the vault: PKCS#11 allows that from read/write sessions only. */
function writable(session: Session, what: string): void {
  if (!session.readWrite) throw new Pkcs11Error(CKR.SESSION_READ_ONLY, `${what} changes token objects: open the session with CKF_RW_SESSION`);
}

/** CK_RSA_PKCS_OAEP_PARAMS for wrapping: SHA-1 (RSA-OAEP) or SHA-256 (RSA-OAEP-256), MGF1 of the same hash, no label. */
function oaepHash(mechanism: Mechanism): "sha1" | "sha256" {
  const { parameter } = mechanism;
  if (parameter.kind !== "oaep") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, "CKM_RSA_PKCS_OAEP needs a CK_RSA_PKCS_OAEP_PARAMS");
  const hash = hashByMechanism(parameter.hashAlg);
  if (!hash || (hash.name !== "sha1" && hash.name !== "sha256")) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, "CKM_RSA_PKCS_OAEP wraps with SHA-1 or SHA-256 only (the vault's RSA-OAEP and RSA-OAEP-256)");
  if (parameter.mgf !== hash.mgf) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, "CKM_RSA_PKCS_OAEP: MGF1 must use the OAEP hash");
  if ((parameter.source !== CKZ_DATA_SPECIFIED && parameter.source !== 0) || parameter.sourceData.length > 0) throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, "CKM_RSA_PKCS_OAEP: the vault takes no OAEP label");
  return hash.name;
}

function withOrigin(request: KeyRequest, origin: "generated" | "imported"): KeyRequest {
  return { ...request, properties: { ...request.properties, tags: { ...request.properties.tags, [ORIGIN_TAG]: origin } } };
}
