// CKM_SHA_1 and CKM_SHA224/256/384/512: software digests with node:crypto.
import { createHash, type Hash } from "node:crypto";
import { mechanismName } from "../pkcs11/constants.ts";
import { HASHES } from "./algorithms.ts";
import { noParameter, type InitContext } from "./operation.ts";

export interface DigestOperation {
  readonly length: number;
  update(data: Buffer): void;
  finish(data: Buffer | undefined): Buffer;
}

export function startDigest(context: Omit<InitContext, "material">): DigestOperation {
  noParameter(context, mechanismName(context.spec.type));
  const hashName = context.spec.hash!;
  const hash: Hash = createHash(hashName);
  return {
    length: HASHES[hashName].length,
    update: (data) => void hash.update(data),
    finish(data) {
      if (data) hash.update(data);
      return hash.digest();
    },
  };
}
