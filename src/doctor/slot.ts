// What one token needs to sign: its key (found, enabled, inside nbf/exp, with sign in key_ops), the permission to
// get and sign (proved by signing a random digest in the vault and verifying it here with the key's public key),
// and a certificate for the same key. The key and the certificate are read through the module's own backend.
import { createHash, randomBytes, verify, X509Certificate, type KeyObject } from "node:crypto";
import type { KeySlot, VaultSlot } from "../config/types.ts";
import { withLogSink } from "../log/log.ts";
import { vaultAesAlgorithm } from "../mechanisms/aes.ts";
import { aesLength } from "../token/aes-length.ts";
import { buildKeyMaterial, type KeyMaterial } from "../token/key-material.ts";
import { isOctKey, usageFromKeyOps } from "../token/secret-key.ts";
import { SECRET_LENGTH_TAG } from "../token/tags.ts";
import { VaultError, type SignAlgorithm, type VaultBackend, type VaultKey } from "../vault/types.ts";
import type { Report } from "./report.ts";

const RBAC_FIX = (what: string, vaultUrl: string): string =>
  `grant the module's identity ${what} on ${vaultUrl}: the "Key Vault Crypto User" role (RBAC vaults), the keys get and sign permissions (access policies), or a Managed HSM local role with them`;

/** Where the user edits this slot: its entry in config.json, or one to add for a key of a listed vault. */
function entry(index: number | undefined, slot: KeySlot): string {
  return index === undefined ? `a slot for '${slot.keyName}' in config.json` : `slots[${index}]`;
}

function describeFailure(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The fix for a vault call that failed for a reason that is not about this key. */
function genericFix(error: unknown, vaultUrl: string): string {
  if (error instanceof VaultError) {
    switch (error.kind) {
      case "auth":
        return "see the credential checks above: the module could not get a token the vault accepts";
      case "network":
      case "timeout":
        return `see the dns, tcp and tls checks for ${vaultUrl}; raise AZURE_KEYVAULT_PKCS11_TIMEOUT_MS for a slow link`;
      case "throttled":
        return "the vault throttles this identity: run again later, or spread the load";
      default:
        break;
    }
  }
  return "run again with AZURE_KEYVAULT_PKCS11_DEBUG=1 for the module's full account of the call";
}

interface SignProbe {
  algorithm: SignAlgorithm;
  hash: "sha256" | "sha384" | "sha512";
}

function signProbeFor(material: KeyMaterial): SignProbe {
  if (material.kind === "RSA") return { algorithm: "RS256", hash: "sha256" };
  switch (material.key.crv) {
    case "P-384":
      return { algorithm: "ES384", hash: "sha384" };
    case "P-521":
      return { algorithm: "ES512", hash: "sha512" };
    case "P-256K":
      return { algorithm: "ES256K", hash: "sha256" };
    default:
      return { algorithm: "ES256", hash: "sha256" };
  }
}

function keyDescription(key: VaultKey, material: KeyMaterial): string {
  return `${key.kid} (${key.kty} ${material.kind === "RSA" ? `${material.keyBits} bits` : key.crv})`;
}

/**
 * `index` is the slot's place in config.json's slots, or undefined for a token of a listed vault (AZURE_KEYVAULT_URL),
 * which no config entry describes.
 */
export async function checkSlot(slot: KeySlot, index: number | undefined, backend: VaultBackend, report: Report): Promise<void> {
  const label = slot.label;
  const where = `key '${slot.keyName}'${slot.keyVersion ? ` version ${slot.keyVersion}` : ""} in ${slot.vaultUrl}`;
  let key: VaultKey;
  try {
    key = await backend.getKey(slot.vaultUrl, slot.keyName, slot.keyVersion);
  } catch (error) {
    if (error instanceof VaultError && error.kind === "not-found") {
      report.fail(
        "key",
        `${where} does not exist: ${error.message}`,
        `check key_name${slot.keyVersion ? " and key_version" : ""} of ${entry(index, slot)} (the vault's keys: \`az keyvault key list --id ${slot.vaultUrl}\`), or create the key`,
        label,
      );
    } else if (error instanceof VaultError && error.kind === "forbidden" && /disabled/i.test(error.message)) {
      // Key Vault refuses even to read a disabled key.
      report.fail("key state", `${where} is disabled: ${error.message}`, `enable it: az keyvault key set-attributes --vault-name <vault> --name ${slot.keyName} --enabled true`, label);
    } else if (error instanceof VaultError && error.kind === "forbidden") {
      report.fail("key", `the vault refused to read ${where}: ${error.message}`, RBAC_FIX("keys/get", slot.vaultUrl), label);
    } else {
      report.fail("key", `cannot read ${where}: ${describeFailure(error)}`, genericFix(error, slot.vaultUrl), label);
    }
    return;
  }
  if (isOctKey(key)) {
    await checkAesKey(key, backend, report, label);
    return;
  }
  let material: KeyMaterial;
  try {
    material = buildKeyMaterial(key, undefined, label);
  } catch (error) {
    report.fail("key", `${key.kid} cannot be a token: ${describeFailure(error)}`, "point the slot at an RSA or EC key (P-256, P-384, P-521, secp256k1)", label);
    return;
  }
  report.ok("key", `found ${keyDescription(key, material)}`, label);

  checkKeyState(key, report, label);
  const setAttributes = `az keyvault key set-attributes --id ${key.kid}`;

  if (key.keyOps.includes("sign")) {
    report.ok("key_ops", `${key.keyOps.join(", ")}`, label);
  } else {
    report.fail(
      "key_ops",
      `${key.keyOps.length > 0 ? key.keyOps.join(", ") : "(none)"}: no sign, so the token's private key cannot sign (CKA_SIGN false)`,
      `allow signing: ${setAttributes} --ops sign verify${material.kind === "RSA" ? " decrypt encrypt" : ""} (key_ops cannot be changed on some imported keys: then create a new version)`,
      label,
    );
  }

  await checkSign(key, material, backend, report, label);
  await checkCertificate(slot, index, key, material, backend, report);
}

/** Enabled, and inside its nbf/exp window: the vault refuses every operation otherwise. */
function checkKeyState(key: VaultKey, report: Report, label: string): void {
  const now = Date.now();
  const setAttributes = `az keyvault key set-attributes --id ${key.kid}`;
  if (!key.enabled) {
    report.fail("key state", `${key.name} is disabled: the vault refuses every operation on it`, `enable it: ${setAttributes} --enabled true`, label);
  } else if (key.notBefore && key.notBefore.getTime() > now) {
    report.fail("key state", `${key.name} is not valid before ${key.notBefore.toISOString()} (nbf)`, `wait until then, or move nbf: ${setAttributes} --not-before <date>`, label);
  } else if (key.expiresOn && key.expiresOn.getTime() <= now) {
    report.fail("key state", `${key.name} expired at ${key.expiresOn.toISOString()} (exp): the vault refuses to sign with it`, `rotate to a new key version, or extend exp: ${setAttributes} --expires <date>`, label);
  } else {
    const window = `${key.notBefore ? `from ${key.notBefore.toISOString()} ` : ""}${key.expiresOn ? `until ${key.expiresOn.toISOString()}` : "with no expiry"}`;
    report.ok("key state", `enabled, valid ${window}`, label);
  }
}

/**
 * A Managed HSM AES key (docs/aes.md): its state, its usage, and a real round trip in the HSM (A*CBCPAD encryption
 * of random bytes, then decryption), after learning its size as the token does.
 */
async function checkAesKey(key: VaultKey, backend: VaultBackend, report: Report, label: string): Promise<void> {
  checkKeyState(key, report, label);
  const usage = usageFromKeyOps(key.keyOps);
  if (!usage.encrypt && !usage.decrypt && !usage.wrap && !usage.unwrap) {
    report.fail("key_ops", `${key.keyOps.join(", ") || "(none)"}: the AES key may not encrypt, decrypt, wrap or unwrap`, `allow it: az keyvault key set-attributes --id ${key.kid} --ops encrypt decrypt wrapKey unwrapKey`, label);
    return;
  }
  report.ok("key_ops", key.keyOps.join(", "), label);
  let length: number | undefined;
  try {
    length = await aesLength(backend, key, label);
  } catch (error) {
    report.fail("aes", `cannot learn the size of the AES key ${key.name}: ${describeFailure(error)}`, genericFix(error, key.vaultUrl), label);
    return;
  }
  if (length === undefined) {
    report.fail("aes", `the HSM did not say how long the AES key ${key.name} is, and no probe could tell`, `tag it with its size in bytes: az keyvault key set-attributes --hsm-name <hsm> --name ${key.name} --tags ${SECRET_LENGTH_TAG}=32`, label);
    return;
  }
  report.ok("key", `found a ${length * 8}-bit AES key ${key.kid} (${key.kty})`, label);
  if (!usage.encrypt || !usage.decrypt) return;
  const plaintext = randomBytes(37);
  const iv = randomBytes(16);
  const algorithm = vaultAesAlgorithm("cbc-pad", length);
  try {
    const { ciphertext } = await backend.encryptAes(key, algorithm, plaintext, { iv });
    const back = await backend.decryptAes(key, algorithm, ciphertext, { iv });
    if (back.equals(plaintext)) report.ok("aes", `the HSM encrypted random bytes with ${algorithm} and decrypted them back`, label);
    else report.fail("aes", `the HSM's ${algorithm} round trip changed the data`, "something between this machine and the HSM alters answers: check vault_url and any proxy", label);
  } catch (error) {
    const forbidden = error instanceof VaultError && error.kind === "forbidden";
    report.fail("aes", `a test ${algorithm} round trip failed: ${describeFailure(error)}`, forbidden ? RBAC_FIX("keys/encrypt and keys/decrypt", key.vaultUrl) : genericFix(error, key.vaultUrl), label);
  }
}

async function checkSign(key: VaultKey, material: KeyMaterial, backend: VaultBackend, report: Report, label: string): Promise<void> {
  const probe = signProbeFor(material);
  const data = randomBytes(32);
  const digest = createHash(probe.hash).update(data).digest();
  let signature: Buffer;
  try {
    signature = await backend.sign(key, probe.algorithm, digest);
  } catch (error) {
    if (error instanceof VaultError && error.kind === "forbidden") {
      const reason = error.message;
      const fix = /disabled/i.test(reason)
        ? "enable the key (see key state)"
        : /expired|not yet valid|nbf/i.test(reason)
          ? "use a key version inside its nbf/exp window (see key state)"
          : /not permitted|key_ops|KeyOperationForbidden/i.test(reason) || error.code === "KeyOperationForbidden"
            ? "add sign to the key's key_ops (see key_ops)"
            : RBAC_FIX("keys/sign", key.vaultUrl);
      report.fail("sign", `the vault refused a test signature with ${key.name} (403): ${reason}`, fix, label);
    } else {
      report.fail("sign", `a test signature with ${probe.algorithm} failed: ${describeFailure(error)}`, genericFix(error, key.vaultUrl), label);
    }
    return;
  }
  const publicKey: KeyObject = material.publicKey;
  const valid = verify(probe.hash, data, material.kind === "EC" ? { key: publicKey, dsaEncoding: "ieee-p1363" } : publicKey, signature);
  if (valid) {
    report.ok("sign", `the vault signed a random ${probe.hash.toUpperCase()} digest with ${probe.algorithm}; the signature verifies with the key's public key`, label);
  } else {
    report.fail(
      "sign",
      `the vault answered a ${probe.algorithm} signature that does not verify with the public key it serves for ${key.kid}`,
      "something between this machine and the vault alters answers, or the vault is not what vault_url should name: check vault_url and any proxy",
      label,
    );
  }
}

async function checkCertificate(slot: KeySlot, index: number | undefined, key: VaultKey, material: KeyMaterial, backend: VaultBackend, report: Report): Promise<void> {
  const label = slot.label;
  let der = slot.certificateDer;
  let origin = "config.json (certificate or certificate_path)";
  if (!slot.certificateFromConfig) {
    origin = `the vault certificate '${slot.keyName}'`;
    const lines: string[] = [];
    try {
      // A 403 here is logged and becomes "no certificate" in the backend; the line is kept for the detail.
      der = await withLogSink((line) => lines.push(line.replace(/^AZURE_KEYVAULT: (?:warning: )?/, "").trim()) > 0, () => backend.getCertificate(slot.vaultUrl, slot.keyName));
    } catch (error) {
      report.fail("certificate", `cannot read ${origin}: ${describeFailure(error)}`, genericFix(error, slot.vaultUrl), label);
      return;
    }
    if (!der) {
      const refused = lines.find((line) => /refused/.test(line));
      report.warn(
        "certificate",
        refused ? `the vault refused to read the certificate: ${refused}` : `the vault has no certificate named '${slot.keyName}': the token shows no certificate object`,
        refused
          ? "grant the identity certificates/get, or set certificate_path on the slot"
          : `clients that need one (pesign, jarsigner, nginx, TLS) need a certificate: set certificate_path on ${entry(index, slot)}, or import one into the vault under the key's name`,
        label,
      );
      return;
    }
  }
  if (!der) return;
  let certificatePublicKey: KeyObject;
  let subject = "";
  try {
    const certificate = new X509Certificate(der);
    subject = certificate.subject.replace(/\n/g, ", ");
    certificatePublicKey = certificate.publicKey;
  } catch (error) {
    report.fail("certificate", `${origin} cannot be parsed: ${describeFailure(error)}`, `replace it with the key's X.509 certificate (PEM or DER)`, label);
    return;
  }
  if (!certificatePublicKey.equals(material.publicKey)) {
    report.fail(
      "certificate",
      `${origin} (subject ${subject}) is for another key: its public key is not the public key of ${key.kid}, so the token shows no certificate`,
      slot.certificateFromConfig
        ? `point certificate_path (or certificate) of ${entry(index, slot)} at the certificate issued for ${slot.keyName}, or remove it to use the vault's`
        : `the vault certificate '${slot.keyName}' belongs to another key version: re-issue it for the current key, or pin key_version on ${entry(index, slot)}`,
      label,
    );
    return;
  }
  report.ok("certificate", `${origin}, subject ${subject}: same public key as the key`, label);
}

/** A vault token: the identity must list the vault's keys; each key is checked when it is used. */
export async function checkVaultSlot(slot: VaultSlot, index: number, backend: VaultBackend, report: Report): Promise<void> {
  try {
    const keys = await backend.listKeys(slot.vaultUrl);
    report.ok("keys", `vault token '${slot.label}': ${keys.length} key(s) listed in ${slot.vaultUrl}`, slot.label);
  } catch (error) {
    const forbidden = error instanceof VaultError && error.kind === "forbidden";
    report.fail(
      "keys",
      `slots[${index}] (vault token '${slot.label}'): cannot list the keys of ${slot.vaultUrl}: ${describeFailure(error)}`,
      forbidden ? `grant the module's identity keys/list on ${slot.vaultUrl} (RBAC: "Key Vault Crypto User"; to make and delete keys, "Key Vault Crypto Officer")` : genericFix(error, slot.vaultUrl),
      slot.label,
    );
  }
}
