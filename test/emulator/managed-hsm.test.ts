// The Managed HSM personality: its challenge and audience, -HSM key types only, oct-HSM bundles without k or size,
// AES-GCM/CBC/CBCPAD and AES key wrap checked against node:crypto with the key bytes the emulator exposes to tests,
// tampering refused, key_ops enforced, RSNULL refused, and no certificates or secrets.
import test from "ava";
import { createCipheriv, createDecipheriv, createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { startEmulator } from "../../src/emulator/index.ts";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw, type RawResponse } from "./raw.ts";

const MHSM = "https://managedhsm.azure.net";
let emulator: TestEmulator;
let token: string;

test.before(async () => {
  emulator = await startTestEmulator({ managedHsm: true, keys: "aes128:oct-HSM:128,aes192:oct-HSM:192,aes256:oct-HSM:256,rsa:RSA-HSM:2048,ec:EC-HSM:P-256" });
  token = await managedIdentityToken(emulator, MHSM);
});
test.after.always(() => emulator?.close());

function call(method: string, path: string, body?: object, bearer = token): Promise<RawResponse> {
  return raw(`${emulator.url}${path}?api-version=2025-07-01`, { method, ca: emulator.caPem, headers: { authorization: `Bearer ${bearer}` }, body });
}

const b64 = (b: Buffer): string => b.toString("base64url");
const unb64 = (s: string): Buffer => Buffer.from(s, "base64url");

test("the challenge names https://managedhsm.azure.net, and a token for the vault audience is refused", async (t) => {
  const anonymous = await raw(`${emulator.url}/keys/aes256?api-version=2025-07-01`, { ca: emulator.caPem });
  t.is(anonymous.status, 401);
  t.is(anonymous.headers["www-authenticate"], `Bearer authorization="https://login.microsoftonline.com/${emulator.tenantId}", resource="${MHSM}"`);
  const vaultToken = await managedIdentityToken(emulator, "https://vault.azure.net");
  const wrongAudience = await call("GET", "/keys/aes256", undefined, vaultToken);
  t.is(wrongAudience.status, 401);
  t.regex(wrongAudience.json.error.message, /AKV10022: Invalid audience/);
  t.is((await call("GET", "/keys/aes256")).status, 200);
});

test("the SDK's KeyClient authenticates through the challenge with a ClientSecretCredential", async (t) => {
  const keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
  const key = await keys.getKey("aes256");
  t.is(key.keyType, "oct-HSM");
});

test("only RSA-HSM, EC-HSM and oct-HSM keys: other types are 400 BadParameter on create and import", async (t) => {
  for (const kty of ["RSA", "EC", "oct"]) {
    const res = await call("POST", `/keys/soft-${kty.toLowerCase()}/create`, { kty, ...(kty === "EC" ? { crv: "P-256" } : {}) });
    t.is(res.status, 400, kty);
    t.is(res.json.error.code, "BadParameter");
  }
  t.is((await call("POST", "/keys/hsm-rsa/create", { kty: "RSA-HSM", key_size: 2048 })).status, 200);
  const jwk = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ format: "jwk" });
  t.is((await call("PUT", "/keys/soft-import", { key: jwk })).status, 400, "an EC import without Hsm is not an HSM key");
  const imported = await call("PUT", "/keys/hsm-import", { key: jwk, Hsm: true });
  t.is(imported.status, 200, imported.text);
  t.is(imported.json.key.kty, "EC-HSM");
  await t.throwsAsync(startEmulator({ managedHsm: true, keys: "soft:RSA:2048" }), { message: /not supported by Managed HSM/ });
  await t.throwsAsync(startEmulator({ managedHsm: true, keys: "k:RSA-HSM:2048", certs: ["k"] }), { message: /no certificates/ });
});

test("oct-HSM bundles carry neither k nor a key size; an imported AES key keeps the caller's bytes", async (t) => {
  const created = await call("POST", "/keys/new-aes/create", { kty: "oct-HSM", key_size: 256 });
  t.is(created.status, 200);
  for (const res of [created, await call("GET", "/keys/new-aes")]) {
    t.false("k" in res.json.key);
    t.false("key_size" in res.json.key);
    t.false("key_size" in res.json);
  }
  const k = randomBytes(32);
  const imported = await call("PUT", "/keys/imported-aes", { key: { kty: "oct-HSM", k: b64(k), key_ops: ["wrapKey", "unwrapKey"] }, Hsm: true });
  t.is(imported.status, 200, imported.text);
  t.false("k" in imported.json.key);
  t.deepEqual(emulator.octKeyBytes("imported-aes"), k);
  t.throws(() => emulator.octKeyBytes("rsa"), { message: /not an AES/ });
});

for (const bits of [128, 192, 256] as const) {
  const alg = `A${bits}GCM`;
  test(`${alg}: the HSM draws the 12-byte IV (ignoring one sent), node:crypto decrypts, and decrypts node:crypto's ciphertext`, async (t) => {
    const key = emulator.octKeyBytes(`aes${bits}`);
    const plaintext = randomBytes(45);
    const aad = Buffer.from("header");
    const sentIv = Buffer.alloc(12, 7);
    const res = await call("POST", `/keys/aes${bits}//encrypt`, { alg, value: b64(plaintext), aad: b64(aad), iv: b64(sentIv) });
    t.is(res.status, 200, res.text);
    const iv = unb64(res.json.iv);
    const tag = unb64(res.json.tag);
    t.is(iv.length, 12);
    t.is(tag.length, 16);
    t.notDeepEqual(iv, sentIv, "the caller's IV is not used");
    t.is(res.json.aad, b64(aad));
    const decipher = createDecipheriv(`aes-${bits}-gcm`, key, iv);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    t.deepEqual(Buffer.concat([decipher.update(unb64(res.json.value)), decipher.final()]), plaintext);

    const ownIv = randomBytes(12);
    const cipher = createCipheriv(`aes-${bits}-gcm`, key, ownIv);
    cipher.setAAD(aad);
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const ownTag = cipher.getAuthTag();
    const decrypted = await call("POST", `/keys/aes${bits}//decrypt`, { alg, value: b64(ciphertext), iv: b64(ownIv), tag: b64(ownTag), aad: b64(aad) });
    t.is(decrypted.status, 200, decrypted.text);
    t.deepEqual(unb64(decrypted.json.value), plaintext);

    const flipped = Buffer.from(ownTag);
    flipped[0]! ^= 1;
    const tampered = Buffer.from(ciphertext);
    tampered[3]! ^= 1;
    for (const [what, body] of [
      ["tag", { alg, value: b64(ciphertext), iv: b64(ownIv), tag: b64(flipped), aad: b64(aad) }],
      ["ciphertext", { alg, value: b64(tampered), iv: b64(ownIv), tag: b64(ownTag), aad: b64(aad) }],
      ["aad", { alg, value: b64(ciphertext), iv: b64(ownIv), tag: b64(ownTag), aad: b64(Buffer.from("other")) }],
      ["no tag", { alg, value: b64(ciphertext), iv: b64(ownIv) }],
    ] as const) {
      const refused = await call("POST", `/keys/aes${bits}//decrypt`, body);
      t.is(refused.status, 400, `tampered ${what}`);
      t.is(refused.json.error.code, "BadParameter");
      t.false("value" in refused.json, `no output for a tampered ${what}`);
    }
  });
}

test("A*CBC and A*CBCPAD use the caller's 16-byte IV both ways; a bad pad or IV is 400", async (t) => {
  const key = emulator.octKeyBytes("aes256");
  const iv = randomBytes(16);
  for (const [alg, padded, size] of [["A256CBC", false, 48], ["A256CBCPAD", true, 45]] as const) {
    const plaintext = randomBytes(size);
    const res = await call("POST", "/keys/aes256//encrypt", { alg, value: b64(plaintext), iv: b64(iv) });
    t.is(res.status, 200, res.text);
    t.is(res.json.iv, b64(iv));
    const decipher = createDecipheriv("aes-256-cbc", key, iv);
    decipher.setAutoPadding(padded);
    t.deepEqual(Buffer.concat([decipher.update(unb64(res.json.value)), decipher.final()]), plaintext, alg);
    const cipher = createCipheriv("aes-256-cbc", key, iv);
    cipher.setAutoPadding(padded);
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const decrypted = await call("POST", "/keys/aes256//decrypt", { alg, value: b64(ciphertext), iv: b64(iv) });
    t.deepEqual(unb64(decrypted.json.value), plaintext, alg);
    t.is((await call("POST", "/keys/aes256//encrypt", { alg, value: b64(plaintext), iv: b64(iv.subarray(0, 12)) })).status, 400, `${alg}: a 12-byte IV`);
    t.is((await call("POST", "/keys/aes256//encrypt", { alg, value: b64(plaintext) })).status, 400, `${alg}: no IV`);
  }
  t.is((await call("POST", "/keys/aes256//encrypt", { alg: "A256CBC", value: b64(randomBytes(20)), iv: b64(iv) })).status, 400, "A256CBC needs whole blocks");
  // A block whose last byte is 0 after decryption is never valid PKCS#7.
  const cipher = createCipheriv("aes-256-cbc", key, iv);
  cipher.setAutoPadding(false);
  const badPad = Buffer.concat([cipher.update(Buffer.alloc(16, 0)), cipher.final()]);
  const refused = await call("POST", "/keys/aes256//decrypt", { alg: "A256CBCPAD", value: b64(badPad), iv: b64(iv) });
  t.is(refused.status, 400);
  t.false("value" in refused.json);
  t.is((await call("POST", "/keys/aes128//encrypt", { alg: "A256CBC", value: b64(randomBytes(16)), iv: b64(iv) })).status, 400, "the algorithm's size must be the key's");
});

test("key wrap: CKM_AES_KEY_WRAP_PAD is RFC 5649 (id-aes*-wrap-pad), CKM_AES_KEY_WRAP and A*KW RFC 3394, both ways", async (t) => {
  for (const bits of [128, 256] as const) {
    const key = emulator.octKeyBytes(`aes${bits}`);
    const crypto = new CryptographyClient(`${emulator.url}/keys/aes${bits}`, emulator.credential(), emulator.clientOptions);
    const odd = randomBytes(20);
    const wrapped = Buffer.from((await crypto.wrapKey("CKM_AES_KEY_WRAP_PAD", odd)).result);
    const unwrapper = createDecipheriv(`id-aes${bits}-wrap-pad`, key, Buffer.from("a65959a6", "hex"));
    t.deepEqual(Buffer.concat([unwrapper.update(wrapped), unwrapper.final()]), odd, `KWP ${bits}`);
    const wrapper = createCipheriv(`id-aes${bits}-wrap-pad`, key, Buffer.from("a65959a6", "hex"));
    const ours = Buffer.concat([wrapper.update(odd), wrapper.final()]);
    t.deepEqual(Buffer.from((await crypto.unwrapKey("CKM_AES_KEY_WRAP_PAD", ours)).result), odd);

    const aligned = randomBytes(32);
    for (const alg of ["CKM_AES_KEY_WRAP", `A${bits}KW`] as const) {
      const kw = Buffer.from((await crypto.wrapKey(alg, aligned)).result);
      const d = createDecipheriv(`id-aes${bits}-wrap`, key, Buffer.from("a6a6a6a6a6a6a6a6", "hex"));
      t.deepEqual(Buffer.concat([d.update(kw), d.final()]), aligned, `${alg} ${bits}`);
      const e = createCipheriv(`id-aes${bits}-wrap`, key, Buffer.from("a6a6a6a6a6a6a6a6", "hex"));
      t.deepEqual(Buffer.from((await crypto.unwrapKey(alg, Buffer.concat([e.update(aligned), e.final()]))).result), aligned);
    }
    const corrupt = Buffer.from(wrapped);
    corrupt[5]! ^= 1;
    const refused = await call("POST", `/keys/aes${bits}//unwrapkey`, { alg: "CKM_AES_KEY_WRAP_PAD", value: b64(corrupt) });
    t.is(refused.status, 400);
    t.false("value" in refused.json);
  }
  t.is((await call("POST", "/keys/aes256//wrapkey", { alg: "CKM_AES_KEY_WRAP", value: b64(randomBytes(20)) })).status, 400, "RFC 3394 needs whole 8-byte blocks");
  t.is((await call("POST", "/keys/aes128//wrapkey", { alg: "A256KW", value: b64(randomBytes(16)) })).status, 400, "A256KW needs a 256-bit key");
});

test("key_ops are enforced: an oct key without encrypt is 403, without unwrapKey too", async (t) => {
  const k = randomBytes(32);
  t.is((await call("PUT", "/keys/wrap-only", { key: { kty: "oct-HSM", k: b64(k), key_ops: ["wrapKey"] } })).status, 200);
  const refused = await call("POST", "/keys/wrap-only//encrypt", { alg: "A256GCM", value: b64(randomBytes(8)) });
  t.is(refused.status, 403);
  t.is(refused.json.error.code, "Forbidden");
  t.is((await call("POST", "/keys/wrap-only//unwrapkey", { alg: "A256KW", value: b64(randomBytes(24)) })).status, 403);
  t.is((await call("POST", "/keys/wrap-only//wrapkey", { alg: "A256KW", value: b64(randomBytes(16)) })).status, 200);
});

test("RSNULL is refused as Managed HSM refuses it; RS256 still signs", async (t) => {
  const digestInfo = Buffer.concat([Buffer.from("3021300906052b0e03021a05000414", "hex"), createHash("sha1").update("x").digest()]);
  const refused = await call("POST", "/keys/rsa//sign", { alg: "RSNULL", value: b64(digestInfo) });
  t.is(refused.status, 400);
  t.deepEqual(refused.json.error, { code: "BadParameter", message: "Invalid RSA signature algorithm" });
  t.is((await call("POST", "/keys/rsa//sign", { alg: "RS256", value: b64(createHash("sha256").update("x").digest()) })).status, 200);
});

test("no certificates and no secrets: those paths are unknown, as on the service", async (t) => {
  for (const [method, path, body] of [
    ["GET", "/certificates", undefined],
    ["GET", "/certificates/rsa", undefined],
    ["POST", "/certificates/rsa/create", { policy: {} }],
    ["GET", "/secrets", undefined],
    ["PUT", "/secrets/p11-cert-rsa", { value: "x" }],
    ["GET", "/deletedsecrets", undefined],
  ] as const) {
    const res = await call(method, path, body);
    t.is(res.status, 404, `${method} ${path}`);
    t.is(res.json.error.code, "NotFound");
  }
});

test("/rng answers on the Managed HSM", async (t) => {
  const res = await call("POST", "/rng", { count: 32 });
  t.is(res.status, 200);
  t.is(unb64(res.json.value).length, 32);
});
