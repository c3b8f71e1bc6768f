// How long a Managed HSM AES key is. The HSM reports no size for oct keys and never returns their bytes, so a key
// this module made carries its CKA_VALUE_LEN in a tag; for any other key one operation per candidate size tells:
// the HSM refuses (400) an algorithm of the wrong size, e.g. A128CBC with a 256-bit key.
import { log } from "../log/log.ts";
import { VaultError, type VaultBackend, type VaultKey } from "../vault/types.ts";
import { AES_LENGTHS, aesPrefix, usageFromKeyOps } from "./secret-key.ts";
import { SECRET_LENGTH_TAG } from "./tags.ts";

export async function aesLength(backend: VaultBackend, key: VaultKey, label: string): Promise<number | undefined> {
  if (key.keySize !== undefined) return key.keySize / 8;
  const tagged = Number(key.tags[SECRET_LENGTH_TAG]);
  if ((AES_LENGTHS as readonly number[]).includes(tagged)) return tagged;
  const can = usageFromKeyOps(key.keyOps);
  const block = Buffer.alloc(16);
  const probe = can.encrypt
    ? (length: number) => backend.encryptAes(key, `${aesPrefix(length)}CBC`, block, { iv: block })
    : can.wrap
      ? (length: number) => backend.wrapKey(key, `${aesPrefix(length)}KW`, block)
      : can.decrypt
        ? (length: number) => backend.decryptAes(key, `${aesPrefix(length)}CBC`, block, { iv: block })
        : undefined;
  if (!probe) {
    log.warn(`${label}: the AES key '${key.name}' allows no encrypt, decrypt or wrapKey, so its size cannot be learned; CKA_VALUE_LEN is unavailable`);
    return undefined;
  }
  for (const length of [...AES_LENGTHS].reverse()) {
    try {
      await probe(length);
      log.debug(`${label}: the AES key '${key.name}' is ${length * 8} bits (probed; tag it ${SECRET_LENGTH_TAG}=${length} to save the probe)`);
      return length;
    } catch (error) {
      if (!(error instanceof VaultError && error.kind === "bad-parameter")) throw error;
    }
  }
  log.warn(`${label}: the HSM accepted no AES size for the key '${key.name}'; CKA_VALUE_LEN is unavailable`);
  return undefined;
}
