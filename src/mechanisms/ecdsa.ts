// ECDSA: CKM_ECDSA on a digest and CKM_ECDSA_SHAx, signed in the vault as ES256/384/512/ES256K, output raw r||s.
import { createHash, createVerify } from "node:crypto";
import { p256, p384, p521 } from "@noble/curves/nist";
import { secp256k1 } from "@noble/curves/secp256k1";
import { CKR, mechanismName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { HASHES, vaultEcdsaAlgorithm, type CurveName, type CurveSpec } from "./algorithms.ts";
import { HashingSigner, noParameter, SinglePartVerifier, singlePartOnly, StreamingVerifier, type InitContext, type SignOperation, type VaultSignRequest, type VerifyOperation } from "./operation.ts";

const NOBLE: Record<CurveName, typeof p256> = { "P-256": p256, "P-384": p384, "P-521": p521, "P-256K": secp256k1 };

/**
 * The digest the vault's algorithm must receive so that it signs the same integer ECDSA derives from `digest`
 * (SEC 1 §4.1.3 step 5: the leftmost min(orderBits, digestBits) bits). Shorter digests are left-padded with
 * zeros; longer ones are cut to the order's bit length. Only a value that cannot fit the algorithm's digest size
 * (a digest longer than 512 bits on P-521) is refused.
 */
export function digestForCurve(digest: Buffer, curve: CurveSpec, targetLength: number, name: string): Buffer {
  let value = digest.length === 0 ? 0n : BigInt(`0x${digest.toString("hex")}`);
  const digestBits = digest.length * 8;
  if (digestBits > curve.orderBits) value >>= BigInt(digestBits - curve.orderBits);
  if (value >> BigInt(targetLength * 8) !== 0n) {
    throw new Pkcs11Error(CKR.DATA_LEN_RANGE, `${name}: a ${digest.length}-byte digest does not fit the ${targetLength}-byte input of Key Vault's ${curve.name} algorithm`);
  }
  return Buffer.from(value.toString(16).padStart(targetLength * 2, "0"), "hex");
}

function curveOf(context: InitContext): CurveSpec {
  const curve = context.material.ec?.curve;
  if (!curve) throw new Pkcs11Error(CKR.KEY_TYPE_INCONSISTENT, "ECDSA needs an EC key");
  return curve;
}

class DigestEcdsaSigner implements SignOperation {
  constructor(
    readonly signatureLength: number,
    private readonly name: string,
    private readonly toRequest: (digest: Buffer) => VaultSignRequest,
  ) {}

  update(): void {
    throw singlePartOnly(this.name);
  }

  finish(data: Buffer | undefined): VaultSignRequest {
    if (!data) throw singlePartOnly(this.name);
    return this.toRequest(data);
  }
}

export function startSign(context: InitContext): SignOperation {
  const name = mechanismName(context.spec.type);
  noParameter(context, name);
  const curve = curveOf(context);
  const vault = vaultEcdsaAlgorithm(curve.name);
  const targetLength = HASHES[vault.hash].length;
  const toRequest = (digest: Buffer): VaultSignRequest => ({ algorithm: vault.algorithm, digest: digestForCurve(digest, curve, targetLength, name) });
  const { signatureLength } = context.material;
  if (!context.spec.hash) return new DigestEcdsaSigner(signatureLength, name, toRequest);
  return new HashingSigner(signatureLength, createHash(context.spec.hash), toRequest);
}

export function startVerify(context: InitContext): VerifyOperation {
  const name = mechanismName(context.spec.type);
  noParameter(context, name);
  const curve = curveOf(context);
  const { material } = context;
  if (!context.spec.hash) {
    const noble = NOBLE[curve.name];
    const point = material.ec!.point;
    return new SinglePartVerifier(name, material.signatureLength, (digest, signature) => {
      try {
        return noble.verify(signature, digest, point, { prehash: false, lowS: false, format: "compact" });
      } catch {
        return false;
      }
    });
  }
  return new StreamingVerifier(createVerify(context.spec.hash), material.signatureLength, (verifier, signature) =>
    verifier.verify({ key: material.publicKey, dsaEncoding: "ieee-p1363" }, signature),
  );
}
