// sign/verify for every Key Vault signature algorithm, checked by node:crypto against the public key built from
// the JWK the vault returns; plus the refusals: wrong digest length, wrong algorithm for the key, key_ops,
// disabled key, nbf/exp.
import test from "ava";
import { constants, createHash, createPublicKey, randomBytes, verify as nodeVerify, type JsonWebKey, type KeyObject } from "node:crypto";
import { CryptographyClient, KeyClient, type JsonWebKey as AzureJwk, type SignatureAlgorithm } from "@azure/keyvault-keys";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw } from "./raw.ts";

let emulator: TestEmulator;
let keys: KeyClient;

test.before(async () => {
  emulator = await startTestEmulator({
    keys: "rsa2048:RSA:2048,rsa3072:RSA-HSM:3072,p256:EC:P-256,p384:EC-HSM:P-384,p521:EC:P-521,k256:EC:P-256K",
  });
  keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
});
test.after.always(() => emulator?.close());

const b64u = (b: Uint8Array | undefined) => Buffer.from(b!).toString("base64url");

function publicKeyFromJwk(jwk: AzureJwk): KeyObject {
  const json: JsonWebKey =
    jwk.kty!.startsWith("RSA")
      ? { kty: "RSA", n: b64u(jwk.n), e: b64u(jwk.e) }
      : { kty: "EC", crv: jwk.crv === "P-256K" ? "secp256k1" : jwk.crv!, x: b64u(jwk.x), y: b64u(jwk.y) };
  return createPublicKey({ key: json, format: "jwk" });
}

const CASES: Array<{ alg: SignatureAlgorithm; key: string; hash: string; pss?: boolean; ec?: boolean }> = [
  { alg: "RS256", key: "rsa2048", hash: "sha256" },
  { alg: "RS384", key: "rsa3072", hash: "sha384" },
  { alg: "RS512", key: "rsa2048", hash: "sha512" },
  { alg: "PS256", key: "rsa2048", hash: "sha256", pss: true },
  { alg: "PS384", key: "rsa2048", hash: "sha384", pss: true },
  { alg: "PS512", key: "rsa3072", hash: "sha512", pss: true },
  { alg: "ES256", key: "p256", hash: "sha256", ec: true },
  { alg: "ES384", key: "p384", hash: "sha384", ec: true },
  { alg: "ES512", key: "p521", hash: "sha512", ec: true },
  { alg: "ES256K", key: "k256", hash: "sha256", ec: true },
];

for (const c of CASES) {
  test(`${c.alg} on ${c.key}: node:crypto verifies the signature with the vault's public key`, async (t) => {
    const key = await keys.getKey(c.key);
    const publicKey = publicKeyFromJwk(key.key!);
    const crypto = new CryptographyClient(key.id!, emulator.credential(), emulator.clientOptions);
    for (let i = 0; i < 3; i++) {
      const message = randomBytes(100 + i);
      const digest = createHash(c.hash).update(message).digest();
      const { result, keyID } = await crypto.sign(c.alg, digest);
      t.is(keyID, key.id);
      const options = c.pss
        ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: digest.length }
        : c.ec
          ? { key: publicKey, dsaEncoding: "ieee-p1363" as const }
          : { key: publicKey, padding: constants.RSA_PKCS1_PADDING };
      t.true(nodeVerify(c.hash, message, options, result), `signature ${i} verifies`);
      t.false(nodeVerify(c.hash, Buffer.concat([message, Buffer.from([0])]), options, result), "and not for another message");
      if (c.ec) t.is(result.length, 2 * ({ p256: 32, k256: 32, p384: 48, p521: 66 } as Record<string, number>)[c.key]!);
    }
  });
}

test("the /verify endpoint accepts a good signature and rejects a tampered one", async (t) => {
  const token = await managedIdentityToken(emulator);
  const headers = { authorization: `Bearer ${token}` };
  for (const c of CASES) {
    const digest = createHash(c.hash).update(`verify ${c.alg}`).digest();
    const signed = await raw(`${emulator.url}/keys/${c.key}//sign?api-version=7.6`, { ca: emulator.caPem, method: "POST", headers, body: { alg: c.alg, value: digest.toString("base64url") } });
    t.is(signed.status, 200, c.alg);
    const signature = Buffer.from(signed.json.value, "base64url");
    const check = async (sig: Buffer) =>
      (await raw(`${emulator.url}/keys/${c.key}/verify?api-version=7.6`.replace(`/keys/${c.key}/verify`, `/keys/${c.key}//verify`), {
        ca: emulator.caPem,
        method: "POST",
        headers,
        body: { alg: c.alg, digest: digest.toString("base64url"), value: sig.toString("base64url") },
      })).json.value;
    t.true(await check(signature), c.alg);
    const tampered = Buffer.from(signature);
    tampered[5]! ^= 1;
    t.false(await check(tampered), `${c.alg} tampered`);
  }
});

test("RSNULL pads the caller's bytes as they are (a SHA-1 DigestInfo) and refuses more than the modulus allows", async (t) => {
  const crypto = new CryptographyClient(`${emulator.url}/keys/rsa2048`, emulator.credential(), emulator.clientOptions);
  const message = Buffer.from("signed through RSNULL");
  const digestInfo = Buffer.concat([Buffer.from("3021300906052b0e03021a05000414", "hex"), createHash("sha1").update(message).digest()]);
  const { result } = await crypto.sign("RSNULL", digestInfo);
  const key = await keys.getKey("rsa2048");
  const publicKey = publicKeyFromJwk(key.key!);
  t.true(nodeVerify("sha1", message, { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.from(result)));
  const tooLong = await t.throwsAsync(crypto.sign("RSNULL", randomBytes(256 - 10)));
  t.is((tooLong as any).statusCode, 400);
});

test("a digest whose length does not fit the algorithm gets 400 BadParameter", async (t) => {
  const crypto = new CryptographyClient(`${emulator.url}/keys/rsa2048`, emulator.credential(), emulator.clientOptions);
  const error = await t.throwsAsync(crypto.sign("RS256", randomBytes(31)));
  t.is((error as any).statusCode, 400);
  t.is((error as any).code, "BadParameter");
  const ec = new CryptographyClient(`${emulator.url}/keys/p256`, emulator.credential(), emulator.clientOptions);
  const ecError = await t.throwsAsync(ec.sign("ES256", randomBytes(48)));
  t.is((ecError as any).statusCode, 400);
});

test("an algorithm that does not fit the key type or curve gets 400 BadParameter", async (t) => {
  const rsa = new CryptographyClient(`${emulator.url}/keys/rsa2048`, emulator.credential(), emulator.clientOptions);
  const e1 = await t.throwsAsync(rsa.sign("ES256", randomBytes(32)));
  t.is((e1 as any).statusCode, 400);
  t.regex((e1 as any).message, /Key and signing algorithm are incompatible/);
  const p256 = new CryptographyClient(`${emulator.url}/keys/p256`, emulator.credential(), emulator.clientOptions);
  for (const alg of ["ES256K", "ES384", "RS256"] as SignatureAlgorithm[]) {
    const e = await t.throwsAsync(p256.sign(alg, randomBytes(alg === "ES384" ? 48 : 32)));
    t.is((e as any).statusCode, 400, alg);
  }
});

test("a disabled key refuses to sign with 403 Forbidden, and signs again once enabled", async (t) => {
  await emulator.addKey("to-disable:EC:P-256");
  const crypto = new CryptographyClient(`${emulator.url}/keys/to-disable`, emulator.credential(), emulator.clientOptions);
  const key = await keys.getKey("to-disable");
  await keys.updateKeyProperties("to-disable", key.properties.version!, { enabled: false });
  const error = await t.throwsAsync(crypto.sign("ES256", randomBytes(32)));
  t.is((error as any).statusCode, 403);
  t.is((error as any).code, "Forbidden");
  t.is((error as any).message, "Operation sign is not allowed on a disabled key.");
  t.false((await keys.getKey("to-disable")).properties.enabled);
  await keys.updateKeyProperties("to-disable", key.properties.version!, { enabled: true });
  t.is((await crypto.sign("ES256", randomBytes(32))).result.length, 64);
});

// The SDK's CryptographyClient checks key_ops and nbf/exp itself once it has read the key, so these two tests talk
// to the REST API directly to see what the emulator answers.
async function rawSign(name: string, alg: string, digest: Buffer) {
  const token = await managedIdentityToken(emulator);
  return raw(`${emulator.url}/keys/${name}//sign?api-version=2025-07-01`, {
    ca: emulator.caPem,
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: { alg, value: digest.toString("base64url") },
  });
}

test("key_ops without sign refuses signing with 403 and the service's message", async (t) => {
  const created = await keys.createRsaKey("verify-only", { keySize: 2048, keyOps: ["verify", "decrypt"] });
  t.deepEqual(created.keyOperations, ["verify", "decrypt"]);
  const refused = await rawSign("verify-only", "RS256", randomBytes(32));
  t.is(refused.status, 403);
  t.deepEqual(refused.json, { error: { code: "Forbidden", message: "Operation sign is not permitted on this key.", innererror: { code: "KeyOperationForbidden" } } });
  await keys.updateKeyProperties("verify-only", created.properties.version!, { keyOps: ["sign"] });
  t.deepEqual((await keys.getKey("verify-only")).keyOperations, ["sign"]);
  t.is((await rawSign("verify-only", "RS256", randomBytes(32))).status, 200);
});

test("nbf in the future and exp in the past refuse signing with 403", async (t) => {
  const now = Date.now();
  const future = await keys.createEcKey("not-yet", { curve: "P-256", notBefore: new Date(now + 3600_000) });
  const past = await keys.createEcKey("expired", { curve: "P-256", expiresOn: new Date(now - 3600_000) });
  t.is(future.properties.notBefore?.getTime(), Math.floor((now + 3600_000) / 1000) * 1000);
  for (const key of [future, past]) {
    const refused = await rawSign(key.name, "ES256", randomBytes(32));
    t.is(refused.status, 403, key.name);
    t.is(refused.json.error.code, "Forbidden");
  }
});
