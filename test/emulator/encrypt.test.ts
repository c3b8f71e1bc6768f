// encrypt/decrypt and wrapkey/unwrapkey: the emulator decrypts what node:crypto encrypted with the vault's public
// key, node:crypto decrypts nothing it cannot (private keys never leave), and AES key wrap round-trips.
import test from "ava";
import { constants, createPublicKey, publicEncrypt, randomBytes, type KeyObject } from "node:crypto";
import { CryptographyClient, KeyClient, type RsaEncryptionAlgorithm } from "@azure/keyvault-keys";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw } from "./raw.ts";

let emulator: TestEmulator;
let keys: KeyClient;
let rsaPublic: KeyObject;

test.before(async () => {
  emulator = await startTestEmulator({ keys: "rsa:RSA:2048,aes128:oct-HSM:128,aes192:oct-HSM:192,aes256:oct:256,ec:EC:P-256" });
  keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
  const jwk = (await keys.getKey("rsa")).key!;
  rsaPublic = createPublicKey({ key: { kty: "RSA", n: Buffer.from(jwk.n!).toString("base64url"), e: Buffer.from(jwk.e!).toString("base64url") }, format: "jwk" });
});
test.after.always(() => emulator?.close());

const RSA_CASES: Array<{ alg: RsaEncryptionAlgorithm; padding: number; oaepHash?: string }> = [
  { alg: "RSA-OAEP", padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha1" },
  { alg: "RSA-OAEP-256", padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
  { alg: "RSA1_5", padding: constants.RSA_PKCS1_PADDING },
];

for (const c of RSA_CASES) {
  test(`${c.alg}: the vault decrypts and unwraps what node:crypto encrypted with its public key`, async (t) => {
    const crypto = new CryptographyClient(`${emulator.url}/keys/rsa`, emulator.credential(), emulator.clientOptions);
    for (const size of [1, 16, 32, 60]) {
      const secret = randomBytes(size);
      const ciphertext = publicEncrypt({ key: rsaPublic, padding: c.padding, ...(c.oaepHash ? { oaepHash: c.oaepHash } : {}) }, secret);
      const decrypted = await crypto.decrypt({ algorithm: c.alg, ciphertext });
      t.deepEqual(Buffer.from(decrypted.result), secret, `decrypt ${size} bytes`);
      const unwrapped = await crypto.unwrapKey(c.alg, ciphertext);
      t.deepEqual(Buffer.from(unwrapped.result), secret, `unwrap ${size} bytes`);
    }
  });

  test(`${c.alg}: wrap then unwrap, and remote encrypt then remote decrypt, round-trip`, async (t) => {
    const token = await managedIdentityToken(emulator);
    const call = (op: string, value: Buffer) =>
      raw(`${emulator.url}/keys/rsa//${op}?api-version=7.5`, { ca: emulator.caPem, method: "POST", headers: { authorization: `Bearer ${token}` }, body: { alg: c.alg, value: value.toString("base64url") } });
    for (const [forward, back] of [["wrapkey", "unwrapkey"], ["encrypt", "decrypt"]] as const) {
      const secret = randomBytes(32);
      const wrapped = await call(forward, secret);
      t.is(wrapped.status, 200);
      t.is(Buffer.from(wrapped.json.value, "base64url").length, 256);
      const unwrapped = await call(back, Buffer.from(wrapped.json.value, "base64url"));
      t.deepEqual(Buffer.from(unwrapped.json.value, "base64url"), secret);
    }
    const garbage = await call("decrypt", randomBytes(256));
    t.is(garbage.status, 400);
  });
}

for (const [name, alg] of [["aes128", "A128KW"], ["aes192", "A192KW"], ["aes256", "A256KW"]] as const) {
  test(`${alg} on an oct key: wrap and unwrap round-trip, and a tampered blob fails the RFC 3394 integrity check`, async (t) => {
    const crypto = new CryptographyClient(`${emulator.url}/keys/${name}`, emulator.credential(), emulator.clientOptions);
    const secret = randomBytes(32);
    const wrapped = await crypto.wrapKey(alg, secret);
    t.is(wrapped.result.length, 40);
    t.notDeepEqual(Buffer.from(wrapped.result.subarray(8)), secret);
    const unwrapped = await crypto.unwrapKey(alg, wrapped.result);
    t.deepEqual(Buffer.from(unwrapped.result), secret);
    const tampered = Buffer.from(wrapped.result);
    tampered[10]! ^= 0x40;
    const error = await t.throwsAsync(crypto.unwrapKey(alg, tampered));
    t.is((error as any).statusCode, 400);
  });
}

test("AES key wrap with an algorithm of the wrong key size, or on an RSA key, gets 400", async (t) => {
  const aes = new CryptographyClient(`${emulator.url}/keys/aes256`, emulator.credential(), emulator.clientOptions);
  t.is(((await t.throwsAsync(aes.wrapKey("A128KW", randomBytes(32)))) as any).statusCode, 400);
  t.is(((await t.throwsAsync(aes.wrapKey("RSA-OAEP", randomBytes(32)))) as any).statusCode, 400);
  const token = await managedIdentityToken(emulator);
  const res = await raw(`${emulator.url}/keys/rsa//wrapkey?api-version=7.5`, { ca: emulator.caPem, method: "POST", headers: { authorization: `Bearer ${token}` }, body: { alg: "A256KW", value: randomBytes(32).toString("base64url") } });
  t.is(res.status, 400);
  t.is(res.json.error.code, "BadParameter");
});

test("an EC key refuses decrypt (403, not in its key_ops), and getRandomBytes returns the count asked for", async (t) => {
  const token = await managedIdentityToken(emulator);
  const headers = { authorization: `Bearer ${token}` };
  const res = await raw(`${emulator.url}/keys/ec//decrypt?api-version=7.5`, { ca: emulator.caPem, method: "POST", headers, body: { alg: "RSA-OAEP", value: randomBytes(32).toString("base64url") } });
  t.is(res.status, 403, "EC keys have no decrypt in key_ops");
  const sizes = [1, 32, 128];
  const seen = new Set<string>();
  for (const count of sizes) {
    const rng = await raw(`${emulator.url}/rng?api-version=7.5`, { ca: emulator.caPem, method: "POST", headers, body: { count } });
    t.is(rng.status, 200);
    const bytes = Buffer.from(rng.json.value, "base64url");
    t.is(bytes.length, count);
    seen.add(bytes.toString("hex"));
  }
  t.is(seen.size, sizes.length);
  for (const count of [0, 129, "8"]) {
    const bad = await raw(`${emulator.url}/rng?api-version=7.5`, { ca: emulator.caPem, method: "POST", headers, body: { count } });
    t.is(bad.status, 400, String(count));
  }
});

test("the Key Vault personality refuses the Managed HSM algorithms (AES-GCM/CBC, CKM_AES_KEY_WRAP[_PAD]) with 400", async (t) => {
  const token = await managedIdentityToken(emulator);
  const post = (op: string, body: object) =>
    raw(`${emulator.url}/keys/aes256//${op}?api-version=2025-07-01`, { ca: emulator.caPem, method: "POST", headers: { authorization: `Bearer ${token}` }, body });
  for (const alg of ["A256GCM", "A256CBC", "A256CBCPAD"]) {
    const res = await post("encrypt", { alg, value: randomBytes(16).toString("base64url"), iv: randomBytes(16).toString("base64url") });
    t.is(res.status, 400, alg);
    t.is(res.json.error.code, "BadParameter");
  }
  for (const alg of ["CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"]) t.is((await post("wrapkey", { alg, value: randomBytes(32).toString("base64url") })).status, 400, alg);
});
