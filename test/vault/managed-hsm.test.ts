// The backend against the emulator's Managed HSM personality on localhost: the service kind comes from the
// challenge (not the host name), there are no certificates, and AES encryption and key wrapping happen in the HSM.
// Every ciphertext is checked with node:crypto and the key bytes the emulator generated (octKeyBytes). Serial: the
// tests count the HSM requests per key to prove nothing is computed locally.
import { constants, createCipheriv, createDecipheriv, publicEncrypt, randomBytes } from "node:crypto";
import test from "ava";
import { createCredential } from "../../src/auth/index.ts";
import { createVaultBackend, VaultError, type AesAlgorithm, type VaultBackend, type VaultKey } from "../../src/vault/index.ts";
import { emulator, managedIdentityToken, moduleConfig, publicKeyOf, type RunningEmulator } from "./helpers.ts";

let emu: RunningEmulator;
let backend: VaultBackend;
let token: string;

const HSM_RESOURCE = "https://managedhsm.azure.net";
const credentialFor = (accessToken: string) => createCredential({ AZURE_CLI_ACCESS_TOKEN: accessToken, HOME: "/nonexistent" });

test.before(async () => {
  emu = await emulator({ managedHsm: true, keys: "aes128:oct-HSM:128,aes192:oct-HSM:192,aes256:oct-HSM:256,rsa:RSA-HSM:2048" });
  token = await managedIdentityToken(emu, HSM_RESOURCE);
  backend = createVaultBackend(moduleConfig(emu), { credential: credentialFor(token) });
});

test.after.always(async () => {
  await backend?.close();
  await emu?.close();
});

const total = () => Object.values(emu.requestCounts()).reduce((sum, n) => sum + n, 0);

test.serial("serviceKind is managed-hsm on localhost, from the challenge's resource; keys say managedHsm; no size for oct keys", async (t) => {
  const fresh = createVaultBackend(moduleConfig(emu), { credential: credentialFor(token) });
  try {
    t.is(await fresh.serviceKind(emu.url), "managed-hsm");
    const before = total();
    t.is(await fresh.serviceKind(emu.url), "managed-hsm");
    t.is(total(), before, "learned once");
  } finally {
    await fresh.close();
  }
  // A backend whose first request is a getKey learns it from that request's challenge.
  const other = createVaultBackend(moduleConfig(emu), { credential: credentialFor(token) });
  try {
    const key = await other.getKey(emu.url, "aes256");
    t.true(key.managedHsm);
    t.is(key.kty, "oct-HSM");
    t.is(key.keySize, undefined, "Managed HSM reports no size");
    const before = total();
    t.is(await other.serviceKind(emu.url), "managed-hsm");
    t.is(total(), before, "no probe after a request");
  } finally {
    await other.close();
  }
});

test.serial("no certificates on Managed HSM: listings are empty without a request, the rest is refused before one", async (t) => {
  await backend.serviceKind(emu.url);
  const before = total();
  t.deepEqual(await backend.listCertificateNames(emu.url), []);
  t.deepEqual(await backend.listStoredCertificates(emu.url), []);
  for (const attempt of [
    () => backend.getStoredCertificate(emu.url, "p11-cert-rsa"),
    () => backend.storeCertificate(emu.url, "p11-cert-rsa", Buffer.from([0x30, 0]), { p11_cert_key: "rsa" }),
    () => backend.deleteStoredCertificate(emu.url, "p11-cert-rsa"),
  ]) {
    const error = await t.throwsAsync(attempt(), { instanceOf: VaultError });
    t.is(error?.kind, "bad-parameter");
    t.regex(error!.message, /^Managed HSM stores no certificates/);
  }
  t.is(total(), before, "nothing reached the HSM");
});

test.serial("random bytes come from the HSM on localhost", async (t) => {
  const before = emu.requestCounts()["get-random-bytes"] ?? 0;
  const bytes = await backend.getRandomBytes(emu.url, 200);
  t.is(bytes?.length, 200);
  t.is((emu.requestCounts()["get-random-bytes"] ?? 0) - before, 2, "two pieces of at most 128 bytes");
});

const SIZES = [128, 192, 256] as const;
const keyFor = (bits: number) => backend.getKey(emu.url, `aes${bits}`);

/** Every AES and wrap call must reach the HSM: the backend never computes with a key locally. */
async function remotely<T>(t: { is(a: unknown, b: unknown, m?: string): void }, name: string, operation: string, run: () => Promise<T>): Promise<T> {
  const before = emu.requestCounts(name)[operation] ?? 0;
  const result = await run();
  t.is((emu.requestCounts(name)[operation] ?? 0) - before, 1, `${operation} went to the HSM`);
  return result;
}

for (const bits of SIZES) {
  test.serial(`A${bits}GCM: the HSM's IV and tag decrypt with node:crypto; node:crypto's ciphertext decrypts in the HSM; tampering is refused`, async (t) => {
    const key = await keyFor(bits);
    const keyBytes = emu.octKeyBytes(`aes${bits}`);
    const algorithm = `A${bits}GCM` as AesAlgorithm;
    const plaintext = randomBytes(45);
    const aad = Buffer.from("header");
    const sealed = await remotely(t, key.name, "encrypt", () => backend.encryptAes(key, algorithm, plaintext, { aad }));
    t.is(sealed.iv?.length, 12);
    t.is(sealed.tag?.length, 16);
    t.is(sealed.ciphertext.length, plaintext.length);
    const decipher = createDecipheriv(`aes-${bits}-gcm`, keyBytes, sealed.iv!);
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.tag!);
    t.deepEqual(Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]), plaintext);

    const iv = randomBytes(12);
    const cipher = createCipheriv(`aes-${bits}-gcm`, keyBytes, iv);
    cipher.setAAD(aad);
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const tag = cipher.getAuthTag();
    t.deepEqual(await remotely(t, key.name, "decrypt", () => backend.decryptAes(key, algorithm, ciphertext, { iv, aad, tag })), plaintext);

    const badTag = Buffer.from(tag);
    badTag[0]! ^= 1;
    for (const options of [{ iv, aad, tag: badTag }, { iv, aad: Buffer.from("other"), tag }, { iv, tag }]) {
      const error = await t.throwsAsync(backend.decryptAes(key, algorithm, ciphertext, options), { instanceOf: VaultError });
      t.is(error?.kind, "bad-parameter");
    }
  });
}

test.serial("GCM: a caller's IV for encryption is refused before any request; decryption without a tag too", async (t) => {
  const key = await keyFor(256);
  const before = emu.requestCounts("aes256");
  const refused = await t.throwsAsync(backend.encryptAes(key, "A256GCM", Buffer.alloc(16), { iv: randomBytes(12) }), { instanceOf: VaultError });
  t.is(refused?.kind, "bad-parameter");
  const noTag = await t.throwsAsync(backend.decryptAes(key, "A256GCM", Buffer.alloc(16), { iv: randomBytes(12) }), { instanceOf: VaultError });
  t.is(noTag?.kind, "bad-parameter");
  t.deepEqual(emu.requestCounts("aes256"), before);
});

for (const bits of SIZES) {
  for (const padded of [false, true]) {
    const algorithm = `A${bits}CBC${padded ? "PAD" : ""}` as AesAlgorithm;
    test.serial(`${algorithm}: the same ciphertext as node:crypto with the caller's IV, both ways; a bad pad is refused`, async (t) => {
      const key = await keyFor(bits);
      const keyBytes = emu.octKeyBytes(`aes${bits}`);
      const iv = randomBytes(16);
      const plaintext = randomBytes(padded ? 37 : 48);
      const cipher = createCipheriv(`aes-${bits}-cbc`, keyBytes, iv).setAutoPadding(padded);
      const expected = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      const sealed = await remotely(t, key.name, "encrypt", () => backend.encryptAes(key, algorithm, plaintext, { iv }));
      t.deepEqual(sealed.ciphertext, expected);
      t.is(sealed.tag, undefined);
      t.deepEqual(await remotely(t, key.name, "decrypt", () => backend.decryptAes(key, algorithm, expected, { iv })), plaintext);
      if (padded) {
        // A last block that decrypts to a bad pad: encrypt 16 bytes ending in 0x00 without padding.
        const raw = createCipheriv(`aes-${bits}-cbc`, keyBytes, iv).setAutoPadding(false);
        const badPad = Buffer.concat([raw.update(Buffer.alloc(16, 0)), raw.final()]);
        const error = await t.throwsAsync(backend.decryptAes(key, algorithm, badPad, { iv }), { instanceOf: VaultError });
        t.is(error?.kind, "bad-parameter");
      }
      const missing = await t.throwsAsync(backend.encryptAes(key, algorithm, plaintext, {}), { instanceOf: VaultError });
      t.is(missing?.kind, "bad-parameter", "CBC needs the caller's IV");
    });
  }
}

const WRAPS: Array<["CKM_AES_KEY_WRAP" | "CKM_AES_KEY_WRAP_PAD" | "A256KW", number, string]> = [
  ["CKM_AES_KEY_WRAP", 32, "id-aes256-wrap"],
  ["CKM_AES_KEY_WRAP_PAD", 20, "id-aes256-wrap-pad"],
  ["A256KW", 24, "id-aes256-wrap"],
];

for (const [algorithm, length, cipherName] of WRAPS) {
  test.serial(`wrapKey/unwrapKey ${algorithm}: node:crypto's ${cipherName} unwraps the HSM's wrap, and the HSM unwraps node:crypto's`, async (t) => {
    const key = await keyFor(256);
    const keyBytes = emu.octKeyBytes("aes256");
    const secret = randomBytes(length);
    const defaultIv = cipherName.endsWith("pad") ? Buffer.from("a65959a6", "hex") : Buffer.alloc(8, 0xa6);
    const wrapped = await remotely(t, key.name, "wrapkey", () => backend.wrapKey(key, algorithm, secret));
    const unwrapper = createDecipheriv(cipherName, keyBytes, defaultIv);
    t.deepEqual(Buffer.concat([unwrapper.update(wrapped), unwrapper.final()]), secret);

    const wrapper = createCipheriv(cipherName, keyBytes, defaultIv);
    const ours = Buffer.concat([wrapper.update(secret), wrapper.final()]);
    t.deepEqual(await remotely(t, key.name, "unwrapkey", () => backend.unwrapKey(key, algorithm, ours)), secret);
    const corrupted = Buffer.from(ours);
    corrupted[3]! ^= 0x40;
    const error = await t.throwsAsync(backend.unwrapKey(key, algorithm, corrupted), { instanceOf: VaultError });
    t.is(error?.kind, "bad-parameter");
  });
}

test.serial("unwrapKey RSA-OAEP and RSA-OAEP-256: what node:crypto wrapped with the JWK's public key unwraps in the HSM", async (t) => {
  const key: VaultKey = await backend.getKey(emu.url, "rsa");
  const secret = randomBytes(32);
  for (const [algorithm, oaepHash] of [["RSA-OAEP", "sha1"], ["RSA-OAEP-256", "sha256"]] as const) {
    const wrapped = publicEncrypt({ key: publicKeyOf(key), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, secret);
    t.deepEqual(await remotely(t, key.name, "unwrapkey", () => backend.unwrapKey(key, algorithm, wrapped)), secret);
  }
});

test.serial("createKey oct-HSM in the HSM: a free name, then the new key encrypts and node:crypto decrypts", async (t) => {
  const key = await backend.createKey(emu.url, "new-aes", { kty: "oct-HSM", keySize: 128 }, { keyOps: ["encrypt", "decrypt"], tags: { p11_pri_CKA_LABEL: "new aes" } });
  t.true(key.managedHsm);
  t.deepEqual(key.tags, { p11_pri_CKA_LABEL: "new aes" });
  t.is(key.keySize, 128, "the size asked for, which the HSM does not report");
  t.is((await backend.updateKeyTags(key, { p11_pri_CKA_LABEL: "renamed" })).keySize, 128, "kept across a tag update");
  const keyBytes = emu.octKeyBytes("new-aes");
  t.is(keyBytes.length, 16);
  const iv = randomBytes(16);
  const sealed = await backend.encryptAes(key, "A128CBCPAD", Buffer.from("hello"), { iv });
  const decipher = createDecipheriv("aes-128-cbc", keyBytes, iv);
  t.is(Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]).toString(), "hello");
  const again = await t.throwsAsync(backend.createKey(emu.url, "new-aes", { kty: "oct-HSM", keySize: 128 }, { keyOps: ["encrypt"], tags: {} }), { instanceOf: VaultError });
  t.is(again?.kind, "conflict");
});
