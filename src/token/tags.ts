// PKCS#11 attributes kept in Key Vault tags, so that every process on any machine finds a key by the label and id
// it was given. The names follow Microsoft's Managed HSM TLS Offload Library (p11_pri_<attribute> for the private
// key, p11_pub_<attribute> for the public key); the value encodings are this module's, as the library's are not
// published: CKA_LABEL as its UTF-8 text, CKA_ID as lowercase hex (docs/vault-tokens.md).
import type { ObjectIdentity } from "./objects.ts";

export type KeySide = "private" | "public";

const PREFIX: Record<KeySide, string> = { private: "p11_pri_", public: "p11_pub_" };

export const labelTag = (side: KeySide): string => `${PREFIX[side]}CKA_LABEL`;
export const idTag = (side: KeySide): string => `${PREFIX[side]}CKA_ID`;

/** The identity a key's tags give one of its objects; a key without tags is labelled by its name. */
export function identityFromTags(tags: Readonly<Record<string, string>>, side: KeySide, keyName: string): ObjectIdentity {
  const label = tags[labelTag(side)] ?? tags[labelTag("private")] ?? keyName;
  const id = idFromTag(tags[idTag(side)] ?? tags[idTag("private")]);
  return id ? { label, id } : { label };
}

/** A CKA_ID kept as a tag (lowercase hex); a value that is not hex is no id. */
export function idFromTag(hex: string | undefined): Buffer | undefined {
  return hex !== undefined && /^([0-9a-f]{2})*$/i.test(hex) ? Buffer.from(hex, "hex") : undefined;
}

/** The tags that record both key objects' identities, merged over the key's other tags. */
export function tagsWithIdentity(tags: Readonly<Record<string, string>>, identities: Partial<Record<KeySide, Partial<ObjectIdentity>>>): Record<string, string> {
  const out = { ...tags };
  for (const side of ["private", "public"] as const) {
    const identity = identities[side];
    if (identity?.label !== undefined) out[labelTag(side)] = identity.label;
    if (identity?.id !== undefined) out[idTag(side)] = identity.id.toString("hex");
  }
  return out;
}

/** Tags of a certificate this module stored in a secret (src/vault/types.ts StoredCertificate). */
export const CERTIFICATE_KEY_TAG = "p11_cert_key";
export const CERTIFICATE_AUTHORITY_TAG = "p11_cert_authority";
export const CERTIFICATE_LABEL_TAG = "p11_cert_CKA_LABEL";
export const CERTIFICATE_ID_TAG = "p11_cert_CKA_ID";

/** How a key came to be, for CKA_LOCAL and CKA_NEVER_EXTRACTABLE: "generated" or "imported" through this module. */
export const ORIGIN_TAG = "p11_pri_origin";

/** The key's origin tag, as buildObjects takes it; a key made elsewhere has none. */
export function originOf(tags: Readonly<Record<string, string>>): { origin?: "generated" | "imported" } {
  const origin = tags[ORIGIN_TAG];
  return origin === "generated" || origin === "imported" ? { origin } : {};
}

/**
 * An AES key's CKA_VALUE_LEN in bytes, written when this module makes the key: Managed HSM reports no size for
 * an oct key and never returns its bytes (aes-length.ts probes the keys made elsewhere).
 */
export const SECRET_LENGTH_TAG = "p11_secret_CKA_VALUE_LEN";
