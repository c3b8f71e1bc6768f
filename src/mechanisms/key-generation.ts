// CKM_RSA_PKCS_KEY_PAIR_GEN and CKM_EC_KEY_PAIR_GEN: a C_GenerateKeyPair template pair becomes the key Key Vault
// makes. What the vault cannot honour (an extractable or non-sensitive private key, a session key, a size or curve
// it does not offer) is refused with the spec's code before anything is created.
import { CKA, CKK, CKM, CKO, CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Attribute, Mechanism } from "../protocol/codec.ts";
import { log } from "../log/log.ts";
import { TemplateReader } from "../token/template.ts";
import type { KeyRequest } from "../token/token.ts";
import type { NewKeySpec } from "../vault/types.ts";
import { CURVES, type CurveName } from "./algorithms.ts";

const RSA_SIZES = [2048, 3072, 4096] as const;
/** CKA_EC_PARAMS as a printable curve name (OpenSC and GnuTLS accept these too). */
const CURVE_NAMES: Record<string, CurveName> = {
  "P-256": "P-256", prime256v1: "P-256", secp256r1: "P-256", "nistp256": "P-256",
  "P-384": "P-384", secp384r1: "P-384", "nistp384": "P-384",
  "P-521": "P-521", secp521r1: "P-521", "nistp521": "P-521",
  secp256k1: "P-256K", "P-256K": "P-256K",
};

export interface KeyPolicy {
  /** HSM-protected keys: always on Managed HSM, the token's `hsm` option on a vault. */
  hsm: boolean;
  ulongSize: number;
}

/** The usage and identity attributes common to generated and imported keys. */
export interface KeyAttributes {
  keyOps: Set<string>;
  label?: string;
  id?: Buffer;
  notBefore?: Date;
  expiresOn?: Date;
}

const USAGES: ReadonlyArray<[number, string]> = [
  [CKA.SIGN, "sign"],
  [CKA.VERIFY, "verify"],
  [CKA.DECRYPT, "decrypt"],
  [CKA.ENCRYPT, "encrypt"],
  [CKA.UNWRAP, "unwrapKey"],
  [CKA.WRAP, "wrapKey"],
];

/**
 * Reads what every key object template may say: its class and key type, label, id, dates and usage, and the
 * attributes the vault can honour only one way. Key Vault keeps the usage per key, not per object, so the
 * private and public templates' usages are merged into one set of key_ops.
 */
export function readKeyAttributes(reader: TemplateReader, objectClass: number, keyType: number | undefined, into: KeyAttributes): void {
  reader.expect(CKA.CLASS, [objectClass]);
  if (keyType !== undefined) reader.expect(CKA.KEY_TYPE, [keyType]);
  const label = reader.text(CKA.LABEL);
  if (label !== undefined) into.label ??= label;
  const id = reader.bytes(CKA.ID);
  if (id !== undefined) into.id ??= Buffer.from(id);
  const start = reader.date(CKA.START_DATE);
  if (start) into.notBefore = start;
  const end = reader.date(CKA.END_DATE);
  if (end) into.expiresOn = end;
  for (const [type, operation] of USAGES) {
    const value = reader.bool(type);
    if (value === true) into.keyOps.add(operation);
  }
  reader.require(CKA.TOKEN, true, "keys live in the vault, so they are token objects");
  // OpenSC's pkcs11-tool asks every EC key to derive: the key is made, shows CKA_DERIVE false, and a debug line says why.
  if (reader.bool(CKA.DERIVE) === true) log.debug(`${reader.what}: CKA_DERIVE true is not honoured: Key Vault keys do not derive (the key shows CKA_DERIVE false)`);
  reader.require(CKA.COPYABLE, false, "vault keys are not copied");
  reader.require(CKA.DESTROYABLE, true, "the private key can be destroyed (soft-deleted in the vault)");
  reader.require(CKA.MODIFIABLE, true, "CKA_LABEL and CKA_ID stay modifiable");
  if (objectClass === CKO.PRIVATE_KEY || objectClass === CKO.SECRET_KEY) {
    reader.require(CKA.EXTRACTABLE, false, "a vault key never leaves the vault");
    reader.require(CKA.SENSITIVE, true, "a vault key never leaves the vault");
    reader.require(CKA.SIGN_RECOVER, false, "Key Vault does not sign with recovery");
    reader.require(CKA.ALWAYS_AUTHENTICATE, false, "the vault authenticates the Azure identity, not a PIN per use");
    reader.require(CKA.WRAP_WITH_TRUSTED, false, "the key is never wrapped out of the vault");
  } else {
    reader.require(CKA.VERIFY_RECOVER, false, "Key Vault does not sign with recovery");
    reader.require(CKA.TRUSTED, false, "only a security officer could set it");
  }
}

/** Key Vault names the label may become; others get a generated name. */
const KEY_NAME = /^[0-9A-Za-z-]{1,127}$/;

export function keyRequest(attributes: KeyAttributes, spec: NewKeySpec): KeyRequest {
  const identity = { ...(attributes.label !== undefined ? { label: attributes.label } : {}), ...(attributes.id ? { id: attributes.id } : {}) };
  return {
    ...(attributes.label !== undefined && KEY_NAME.test(attributes.label) ? { preferredName: attributes.label } : {}),
    spec,
    properties: {
      keyOps: [...attributes.keyOps],
      tags: {},
      ...(attributes.notBefore ? { notBefore: attributes.notBefore } : {}),
      ...(attributes.expiresOn ? { expiresOn: attributes.expiresOn } : {}),
    },
    identities: { private: identity, public: identity },
  };
}

export function keyPairRequest(mechanism: Mechanism, publicTemplate: readonly Attribute[], privateTemplate: readonly Attribute[], policy: KeyPolicy): KeyRequest {
  const rsa = mechanism.type === CKM.RSA_PKCS_KEY_PAIR_GEN;
  if (!rsa && mechanism.type !== CKM.EC_KEY_PAIR_GEN) throw new Pkcs11Error(CKR.MECHANISM_INVALID, `${mechanismName(mechanism.type)} makes no key pair here`);
  if (mechanism.parameter.kind !== "none") throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${mechanismName(mechanism.type)} takes no parameter`);
  const publicReader = new TemplateReader(publicTemplate, policy.ulongSize, "the public key template");
  const privateReader = new TemplateReader(privateTemplate, policy.ulongSize, "the private key template");
  const attributes: KeyAttributes = { keyOps: new Set() };
  // The private key's label and id name the key when both are given.
  readKeyAttributes(privateReader, CKO.PRIVATE_KEY, rsa ? CKK.RSA : CKK.EC, attributes);
  readKeyAttributes(publicReader, CKO.PUBLIC_KEY, rsa ? CKK.RSA : CKK.EC, attributes);
  if (attributes.keyOps.size === 0) {
    // No usage named at all: a signing key (and for RSA, a decryption key), the vault's own default for RSA too.
    for (const operation of rsa ? ["sign", "verify", "encrypt", "decrypt"] : ["sign", "verify"]) attributes.keyOps.add(operation);
  }
  let spec: NewKeySpec;
  if (rsa) {
    const bits = publicReader.ulong(CKA.MODULUS_BITS) ?? privateReader.ulong(CKA.MODULUS_BITS);
    privateReader.bytes(CKA.MODULUS_BITS);
    if (bits === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "CKM_RSA_PKCS_KEY_PAIR_GEN needs CKA_MODULUS_BITS in the public key template");
    if (!(RSA_SIZES as readonly number[]).includes(bits)) throw publicReader.invalid(CKA.MODULUS_BITS, `${bits}: Key Vault makes RSA keys of 2048, 3072 or 4096 bits`);
    const exponent = publicReader.bytes(CKA.PUBLIC_EXPONENT);
    if (exponent !== undefined && BigInt(`0x${exponent.toString("hex") || "0"}`) !== 65537n) {
      throw publicReader.invalid(CKA.PUBLIC_EXPONENT, "must be 65537 (0x010001), the only exponent Key Vault makes");
    }
    spec = { kty: policy.hsm ? "RSA-HSM" : "RSA", keySize: bits as 2048 | 3072 | 4096, publicExponent: 65537 };
  } else {
    const params = publicReader.bytes(CKA.EC_PARAMS) ?? privateReader.bytes(CKA.EC_PARAMS);
    privateReader.bytes(CKA.EC_PARAMS);
    if (params === undefined) throw new Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "CKM_EC_KEY_PAIR_GEN needs CKA_EC_PARAMS in the public key template");
    if (attributes.keyOps.has("decrypt") || attributes.keyOps.has("encrypt") || attributes.keyOps.has("wrapKey") || attributes.keyOps.has("unwrapKey")) {
      throw new Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, "an EC key in Key Vault signs and verifies only: remove CKA_DECRYPT, CKA_ENCRYPT, CKA_WRAP and CKA_UNWRAP");
    }
    spec = { kty: policy.hsm ? "EC-HSM" : "EC", curve: curveOf(params) };
  }
  publicReader.finish([CKA.PRIVATE, CKA.SUBJECT]);
  privateReader.finish([CKA.PRIVATE, CKA.SUBJECT]);
  return keyRequest(attributes, spec);
}

/** CKA_EC_PARAMS: the named curve's OID, or a printable curve name. */
export function curveOf(params: Buffer): CurveName {
  for (const curve of Object.values(CURVES)) if (curve.oidDer.equals(params)) return curve.name;
  if (params.length >= 2 && params[0] === 0x13 && params[1] === params.length - 2) {
    const named = CURVE_NAMES[params.subarray(2).toString("latin1")];
    if (named) return named;
  }
  if (params[0] === 0x06 || params[0] === 0x13) throw new Pkcs11Error(CKR.CURVE_NOT_SUPPORTED, "CKA_EC_PARAMS names a curve Key Vault does not offer (P-256, P-384, P-521, secp256k1)");
  throw new Pkcs11Error(CKR.DOMAIN_PARAMS_INVALID, "CKA_EC_PARAMS is neither a named curve's OID nor a curve name (explicit parameters are not supported)");
}

/** The same key, HSM-protected: what a Managed HSM makes whatever the template's token thought it was. */
export function hsmSpec(spec: NewKeySpec): NewKeySpec {
  if (spec.kty === "RSA") return { ...spec, kty: "RSA-HSM" };
  if (spec.kty === "EC") return { ...spec, kty: "EC-HSM" };
  return spec;
}

/** An imported key, HSM-protected likewise. */
export function hsmImport<T extends { kty: string }>(key: T): T {
  return key.kty === "RSA" || key.kty === "EC" ? { ...key, kty: `${key.kty}-HSM` } : key;
}
