// Creating, changing and destroying objects: C_GenerateKeyPair, C_GenerateKey, C_CreateObject, C_DestroyObject,
// C_SetAttributeValue, C_WrapKey and C_UnwrapKey. Token objects live in the vault (keys, their tags, stored
// certificates): this file reads the templates and the session's rules, the token (src/token/) changes the vault.
import { X509Certificate } from "node:crypto";
import { keyPairRequest, type KeyPolicy } from "../mechanisms/key-generation.ts";
import { CKA, CKC, CKO, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Attribute, Mechanism, OutRequest } from "../protocol/codec.ts";
import { privateKeyImport } from "../token/import.ts";
import { ORIGIN_TAG } from "../token/tags.ts";
import { TemplateReader } from "../token/template.ts";
import type { KeyRequest, Token } from "../token/token.ts";
import { andThen, type Immediate } from "./immediate.ts";
import type { OutResult } from "./operations.ts";
import type { Session } from "./session.ts";

export interface GeneratedPair {
  publicHandle: number;
  privateHandle: number;
}

const notYet = (what: string): never => {
  throw new Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, `${what} is not offered yet`);
};

export class KeyManagement {
  constructor(private readonly ulongSize: number) {}

  generateKeyPair(session: Session, mechanism: Mechanism, publicTemplate: Attribute[], privateTemplate: Attribute[]): Promise<GeneratedPair> {
    writable(session, "C_GenerateKeyPair");
    const request = keyPairRequest(mechanism, publicTemplate, privateTemplate, this.policy(session.token));
    return session.token.createKey(withOrigin(request, "generated"));
  }

  generateKey(_session: Session, _mechanism: Mechanism, _template: Attribute[]): Immediate<number> {
    return notYet("C_GenerateKey");
  }

  createObject(session: Session, template: Attribute[]): Promise<number> {
    const reader = new TemplateReader(template, this.ulongSize, "the C_CreateObject template");
    const objectClass = reader.ulong(CKA.CLASS);
    if (objectClass === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "C_CreateObject needs CKA_CLASS");
    switch (objectClass) {
      case CKO.CERTIFICATE:
        return this.createCertificate(session, reader);
      case CKO.PRIVATE_KEY: {
        const { request, imported } = privateKeyImport(reader, this.policy(session.token));
        writable(session, "C_CreateObject");
        return session.token.createKey(withOrigin(request, "imported"), imported).then((created) => created.privateHandle);
      }
      default:
        throw reader.invalid(CKA.CLASS, `0x${objectClass.toString(16)}: this token stores certificates (CKO_CERTIFICATE) and imports private keys (CKO_PRIVATE_KEY); public keys come with their private key`);
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
    return andThen(session.token.object(handle), () => {
      writable(session, "C_DestroyObject");
      return session.token.destroy(handle);
    });
  }

  setAttributeValue(session: Session, handle: number, template: Attribute[]): Immediate<void> {
    return andThen(session.token.object(handle), ({ object }) => {
      const reader = new TemplateReader(template, this.ulongSize, "the C_SetAttributeValue template");
      const label = reader.text(CKA.LABEL);
      const id = reader.bytes(CKA.ID);
      for (const { type } of template) {
        if (type === CKA.LABEL || type === CKA.ID) continue;
        throw reader.invalid(type, object.attributes.has(type) ? "cannot be changed: only CKA_LABEL and CKA_ID can" : "is not an attribute of this object", object.attributes.has(type) ? CKR.ATTRIBUTE_READ_ONLY : CKR.ATTRIBUTE_TYPE_INVALID);
      }
      writable(session, "C_SetAttributeValue");
      if (label === undefined && id === undefined) return;
      return session.token.setIdentity(handle, { ...(label !== undefined ? { label } : {}), ...(id ? { id: Buffer.from(id) } : {}) });
    });
  }

  wrapKey(_session: Session, _mechanism: Mechanism, _wrappingKey: number, _key: number, _out: OutRequest): Immediate<OutResult> {
    return notYet("C_WrapKey");
  }

  unwrapKey(_session: Session, _mechanism: Mechanism, _unwrappingKey: number, _wrapped: Buffer, _template: Attribute[]): Immediate<number> {
    return notYet("C_UnwrapKey");
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

function withOrigin(request: KeyRequest, origin: "generated" | "imported"): KeyRequest {
  return { ...request, properties: { ...request.properties, tags: { ...request.properties.tags, [ORIGIN_TAG]: origin } } };
}
