// Creating, changing and destroying objects: C_GenerateKeyPair, C_GenerateKey, C_CreateObject, C_DestroyObject,
// C_SetAttributeValue, C_WrapKey and C_UnwrapKey. Token objects live in the vault (keys, their tags, stored
// certificates); session objects live in this helper only.
import type { Attribute, Mechanism, OutRequest } from "../protocol/codec.ts";
import { CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Immediate } from "./immediate.ts";
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
  generateKeyPair(_session: Session, _mechanism: Mechanism, _publicTemplate: Attribute[], _privateTemplate: Attribute[]): Immediate<GeneratedPair> {
    return notYet("C_GenerateKeyPair");
  }

  generateKey(_session: Session, _mechanism: Mechanism, _template: Attribute[]): Immediate<number> {
    return notYet("C_GenerateKey");
  }

  createObject(_session: Session, _template: Attribute[]): Immediate<number> {
    return notYet("C_CreateObject");
  }

  destroyObject(_session: Session, _handle: number): Immediate<void> {
    return notYet("C_DestroyObject");
  }

  setAttributeValue(_session: Session, _handle: number, _template: Attribute[]): Immediate<void> {
    return notYet("C_SetAttributeValue");
  }

  wrapKey(_session: Session, _mechanism: Mechanism, _wrappingKey: number, _key: number, _out: OutRequest): Immediate<OutResult> {
    return notYet("C_WrapKey");
  }

  unwrapKey(_session: Session, _mechanism: Mechanism, _unwrappingKey: number, _wrapped: Buffer, _template: Attribute[]): Immediate<number> {
    return notYet("C_UnwrapKey");
  }
}
