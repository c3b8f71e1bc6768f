// One AES encryption or decryption in a session (C_EncryptInit .. C_Encrypt / C_EncryptFinal, and the decrypt
// twins), with a Managed HSM key or a session key. Update calls gather the input; the finishing call works on all
// of it at once (aes.ts says why), so an Update returns no output, as PKCS#11 allows.
import { aesOutputLength, checkAesInput, localAes, MAX_GATHERED_BYTES, usableSecret, vaultAesAlgorithm, type AesParameters } from "../mechanisms/aes.ts";
import { CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { SecretMaterial } from "../token/secret-key.ts";
import { vaultFailure } from "../token/vault-errors.ts";
import type { VaultBackend } from "../vault/types.ts";
import type { Immediate } from "./immediate.ts";

export class SymmetricCipher {
  private readonly parts: Buffer[] = [];
  private gathered = 0;
  multiPart = false;
  /** An output that did not fit the caller's buffer, kept so that the retry does not compute it again. */
  private kept: { input: Buffer; output: Buffer } | undefined;
  private readonly length: number;

  constructor(
    readonly direction: "encrypt" | "decrypt",
    readonly params: AesParameters,
    private readonly secret: SecretMaterial,
    private readonly backend: VaultBackend,
    private readonly label: string,
  ) {
    this.length = usableSecret(secret, direction, label);
    if (secret.key && params.mode === "gcm" && direction === "encrypt") {
      // Managed HSM draws the IV of every GCM encryption itself: a caller-chosen IV cannot be honoured.
      throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${label}: Managed HSM chooses the GCM IV itself, so C_Encrypt with a caller's IV cannot be honoured; use C_EncryptMessage with CKG_GENERATE_RANDOM (docs/aes.md)`);
    }
    if (secret.key && params.mode === "gcm" && params.tagBytes !== 16) {
      throw new Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, `${label}: Managed HSM's GCM tags are 128 bits, not ${params.tagBytes * 8}`);
    }
  }

  update(data: Buffer): void {
    this.gathered += data.length;
    if (this.gathered > MAX_GATHERED_BYTES) throw new Pkcs11Error(this.direction === "encrypt" ? CKR.DATA_LEN_RANGE : CKR.ENCRYPTED_DATA_LEN_RANGE, `${this.label}: a multi-part AES operation takes at most ${MAX_GATHERED_BYTES} bytes`);
    this.parts.push(Buffer.from(data));
    this.multiPart = true;
  }

  /** Everything gathered, plus the finishing call's own input. */
  input(last?: Buffer): Buffer {
    return Buffer.concat(last ? [...this.parts, last] : this.parts);
  }

  /** The output length for a length query: exact, or for CBC_PAD decryption the upper bound. */
  outputLength(input: Buffer): number {
    if (this.kept?.input.equals(input)) return this.kept.output.length;
    return aesOutputLength(this.params, this.direction, input.length);
  }

  run(input: Buffer): Immediate<Buffer> {
    if (this.kept?.input.equals(input)) return this.kept.output;
    checkAesInput(this.params, this.direction, input, this.label);
    const { secret, params } = this;
    if (secret.value) return localAes(params, this.direction, secret.value, input);
    const key = secret.key!;
    const algorithm = vaultAesAlgorithm(params.mode, this.length);
    if (this.direction === "encrypt") {
      return this.backend.encryptAes(key, algorithm, input, { iv: params.iv }).then(
        ({ ciphertext }) => ciphertext,
        (error: unknown) => Promise.reject(vaultFailure(error, this.label, "encrypt")),
      );
    }
    const tagged = params.mode === "gcm";
    const ciphertext = tagged ? input.subarray(0, input.length - params.tagBytes) : input;
    const options = { iv: params.iv, ...(tagged ? { aad: params.aad, tag: input.subarray(input.length - params.tagBytes) } : {}) };
    return this.backend.decryptAes(key, algorithm, ciphertext, options).catch((error: unknown) => Promise.reject(vaultFailure(error, this.label, "decrypt")));
  }

  /** Keeps an output the caller's buffer was too small for. */
  keep(input: Buffer, output: Buffer): void {
    this.kept = { input: Buffer.from(input), output };
  }
}
