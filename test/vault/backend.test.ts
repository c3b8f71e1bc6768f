import { constants, createHash, publicEncrypt, randomBytes, verify, X509Certificate } from "node:crypto";
import { createServer } from "node:net";
import test from "ava";
import { KeyClient } from "@azure/keyvault-keys";
import { createCredential } from "../../src/auth/index.ts";
import { discoverSlots } from "../../src/token/discover.ts";
import { createVaultBackend, VaultError, type SignAlgorithm, type VaultBackend } from "../../src/vault/index.ts";
import { emulator, managedIdentityToken, moduleConfig, publicKeyOf, type RunningEmulator } from "./helpers.ts";

let emu: RunningEmulator;
let backend: VaultBackend;
let token: string;

test.before(async () => {
  emu = await emulator({
    keys: "rsa2048:RSA:2048,rsa3072:RSA:3072,ec256:EC:P-256,ec384:EC:P-384,ec521:EC:P-521,ec256k:EC:P-256K,aes:oct:256",
    certs: ["rsa2048", "ec256"],
  });
  token = await managedIdentityToken(emu);
  backend = createVaultBackend(moduleConfig(emu), { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }) });
});

test.after.always(async () => {
  await backend?.close();
  await emu?.close();
});

const HASHES: Record<string, string> = { "256": "sha256", "384": "sha384", "512": "sha512" };

const signCases: Array<[string, SignAlgorithm]> = [
  ["rsa2048", "RS256"],
  ["rsa2048", "RS384"],
  ["rsa2048", "RS512"],
  ["rsa2048", "PS256"],
  ["rsa3072", "PS384"],
  ["rsa3072", "PS512"],
  ["ec256", "ES256"],
  ["ec384", "ES384"],
  ["ec521", "ES512"],
  ["ec256k", "ES256K"],
];

for (const [keyName, algorithm] of signCases) {
  test(`sign ${algorithm} with ${keyName}: node:crypto verifies the signature against the JWK`, async (t) => {
    const key = await backend.getKey(emu.url, keyName);
    const hash = HASHES[algorithm.slice(2, 5)]!;
    const message = randomBytes(100);
    const digest = createHash(hash).update(message).digest();
    const signature = await backend.sign(key, algorithm, digest);
    const publicKey = publicKeyOf(key);
    if (algorithm.startsWith("ES")) {
      const coordinate = key.x!.length;
      t.is(signature.length, 2 * coordinate, "raw r||s");
      t.true(verify(hash, message, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature));
    } else if (algorithm.startsWith("PS")) {
      t.true(verify(hash, message, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: digest.length }, signature));
    } else {
      t.true(verify(hash, message, publicKey, signature));
    }
    // A different message must not verify: the check above is not vacuous.
    t.false(verify(hash, Buffer.concat([message, Buffer.from([1])]), algorithm.startsWith("ES") ? { key: publicKey, dsaEncoding: "ieee-p1363" } : { key: publicKey, padding: algorithm.startsWith("PS") ? constants.RSA_PKCS1_PSS_PADDING : constants.RSA_PKCS1_PADDING }, signature));
  });
}

test("decrypt RSA-OAEP, RSA-OAEP-256 and RSA1_5 of what node:crypto encrypted with the JWK", async (t) => {
  const key = await backend.getKey(emu.url, "rsa2048");
  const publicKey = publicKeyOf(key);
  const plaintext = randomBytes(32);
  const oaep1 = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha1" }, plaintext);
  const oaep256 = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, plaintext);
  const pkcs1 = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, plaintext);
  t.deepEqual(await backend.decrypt(key, "RSA-OAEP", oaep1), plaintext);
  t.deepEqual(await backend.decrypt(key, "RSA-OAEP-256", oaep256), plaintext);
  t.deepEqual(await backend.decrypt(key, "RSA1_5", pkcs1), plaintext);
  // The wrong padding is refused by the vault, not decrypted into garbage.
  const error = await t.throwsAsync(backend.decrypt(key, "RSA-OAEP-256", oaep1), { instanceOf: VaultError });
  t.is(error?.kind, "bad-parameter");
});

test("getKey: fields from the JWK, version pinning, managedHsm from the host name", async (t) => {
  const rsa = await backend.getKey(emu.url, "rsa2048");
  t.is(rsa.name, "rsa2048");
  t.is(rsa.vaultUrl, emu.url);
  t.is(rsa.kid, `${emu.url}/keys/rsa2048/${rsa.version}`);
  t.regex(rsa.version, /^[0-9a-f]{32}$/);
  t.is(rsa.kty, "RSA");
  t.is(rsa.n!.length, 256);
  t.not(rsa.n![0], 0);
  t.deepEqual(rsa.e, Buffer.from([1, 0, 1]));
  t.true(rsa.enabled);
  t.false(rsa.managedHsm);
  t.true(rsa.keyOps.includes("sign"));
  t.is(publicKeyOf(rsa).asymmetricKeyDetails?.modulusLength, 2048);

  const ec = await backend.getKey(emu.url, "ec521");
  t.is(ec.crv, "P-521");
  t.is(ec.x!.length, 66);
  t.is(ec.y!.length, 66);
  t.is(ec.n, undefined);

  const pinned = await backend.getKey(emu.url, "rsa2048", rsa.version);
  t.is(pinned.kid, rsa.kid);
  const missingVersion = await t.throwsAsync(backend.getKey(emu.url, "rsa2048", "00000000000000000000000000000000"), { instanceOf: VaultError });
  t.is(missingVersion?.kind, "not-found");
});

test("getKey of a missing key: VaultError not-found naming the key", async (t) => {
  const error = await t.throwsAsync(backend.getKey(emu.url, "no-such-key"), { instanceOf: VaultError });
  t.is(error?.kind, "not-found");
  t.is(error?.statusCode, 404);
  t.is(error?.code, "KeyNotFound");
  t.regex(error!.message, /^Key Vault refused get key on key 'no-such-key' in https:\/\/127\.0\.0\.1:\d+: .+ \(404 Not Found\)$/);
});

test("getCertificate: the vault's DER for the key's certificate, undefined where there is none", async (t) => {
  const der = await backend.getCertificate(emu.url, "rsa2048");
  t.truthy(der);
  const certificate = new X509Certificate(der!);
  const key = await backend.getKey(emu.url, "rsa2048");
  t.deepEqual(certificate.publicKey.export({ format: "jwk" }).n, key.n!.toString("base64url"));
  t.is(await backend.getCertificate(emu.url, "ec384"), undefined);
});

test("listKeyNames follows nextLink pages; discoverSlots makes one sorted slot per key", async (t) => {
  const paged = await emulator({});
  try {
    const names = Array.from({ length: 30 }, (_, i) => `key-${String(i).padStart(2, "0")}`);
    await paged.addKey(names.map((name) => `${name}:EC:P-256`).join(","));
    const pagedToken = await managedIdentityToken(paged);
    const pagedBackend = createVaultBackend(moduleConfig(paged), { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: pagedToken, HOME: "/nonexistent" }) });
    const listed = await pagedBackend.listKeyNames(paged.url);
    t.deepEqual([...listed].sort(), names);
    const slots = await discoverSlots(moduleConfig(paged), pagedBackend);
    t.deepEqual(slots.map((slot) => (slot.kind === "key" ? slot.keyName : undefined)), names);
    t.deepEqual(slots.map((slot) => slot.label), names);
    await pagedBackend.close();
  } finally {
    await paged.close();
  }
});

test("key_ops and disabled keys: the vault's refusal becomes VaultError forbidden with its message", async (t) => {
  const keys = new KeyClient(emu.url, createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }), {
    disableChallengeResourceVerification: true,
    tlsOptions: { ca: emu.caPem },
  } as ConstructorParameters<typeof KeyClient>[2]);
  await keys.createKey("verify-only", "EC", { curve: "P-256", keyOps: ["verify"] });
  await keys.createKey("disabled", "EC", { curve: "P-256" });
  const verifyOnly = await backend.getKey(emu.url, "verify-only");
  t.deepEqual(verifyOnly.keyOps, ["verify"]);
  const digest = createHash("sha256").update("x").digest();
  const refused = await t.throwsAsync(backend.sign(verifyOnly, "ES256", digest), { instanceOf: VaultError });
  t.is(refused?.kind, "forbidden");
  t.is(refused?.statusCode, 403);
  t.regex(refused!.message, /^Key Vault refused sign on key 'verify-only': .*sign.* \(403 Forbidden\)$/);

  const disabled = await backend.getKey(emu.url, "disabled");
  await keys.updateKeyProperties("disabled", { enabled: false });
  const off = await t.throwsAsync(backend.sign(disabled, "ES256", digest), { instanceOf: VaultError });
  t.is(off?.kind, "forbidden");
  t.is((await backend.getKey(emu.url, "disabled")).enabled, false);
});

test("a wrong algorithm or digest length is VaultError bad-parameter", async (t) => {
  const ec = await backend.getKey(emu.url, "ec256");
  const wrongAlg = await t.throwsAsync(backend.sign(ec, "RS256", createHash("sha256").update("x").digest()), { instanceOf: VaultError });
  t.is(wrongAlg?.kind, "bad-parameter");
  t.is(wrongAlg?.statusCode, 400);
  const wrongLength = await t.throwsAsync(backend.sign(ec, "ES256", Buffer.alloc(20)), { instanceOf: VaultError });
  t.is(wrongLength?.kind, "bad-parameter");
});

test("16 concurrent signers all get valid signatures", async (t) => {
  const key = await backend.getKey(emu.url, "ec256");
  const publicKey = publicKeyOf(key);
  const messages = Array.from({ length: 64 }, (_, i) => Buffer.from(`message ${i}`));
  const queue = [...messages.entries()];
  const results: Array<[Buffer, Buffer]> = [];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const message = next[1];
        results.push([message, await backend.sign(key, "ES256", createHash("sha256").update(message).digest())]);
      }
    }),
  );
  t.is(results.length, 64);
  for (const [message, signature] of results) t.true(verify("sha256", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature));
});

test("getRandomBytes: from a vault that serves it (the emulator), none from a standard vault", async (t) => {
  const bytes = await backend.getRandomBytes(emu.url, 300);
  t.is(bytes?.length, 300);
  t.notDeepEqual(bytes, Buffer.alloc(300));
  // A standard (non-HSM) vault is not asked at all: no network needed for this answer.
  t.is(await backend.getRandomBytes("https://unreachable-vault.vault.azure.net", 16), undefined);
});

test("localhost works too: challenge resource verification is off for every loopback host", async (t) => {
  const localhost = emu.url.replace("127.0.0.1", "localhost");
  const key = await backend.getKey(localhost, "ec256");
  t.is(key.vaultUrl, localhost);
  const digest = createHash("sha256").update("localhost").digest();
  t.true(verify("sha256", Buffer.from("localhost"), { key: publicKeyOf(key), dsaEncoding: "ieee-p1363" }, await backend.sign(key, "ES256", digest)));
});

test("TLS: without the emulator's CA the connection is refused as a network error", async (t) => {
  const untrusting = createVaultBackend(moduleConfig(emu, { caFiles: [] }), {
    credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }),
    env: {},
  });
  const error = await t.throwsAsync(untrusting.getKey(emu.url, "ec256"), { instanceOf: VaultError });
  t.is(error?.kind, "network");
  t.regex(error!.message, /cannot reach Key Vault/);
  await untrusting.close();
});

test("TLS: NODE_EXTRA_CA_CERTS still counts when a ca_file is configured", async (t) => {
  const other = await emulator({});
  try {
    // Trust list = system store + NODE_EXTRA_CA_CERTS (this emulator's CA) + ca_file (another emulator's CA).
    const trusting = createVaultBackend(moduleConfig(emu, { caFiles: [other.caFile] }), {
      credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }),
      env: { NODE_EXTRA_CA_CERTS: emu.caFile },
    });
    t.is((await trusting.getKey(emu.url, "ec256")).name, "ec256");
    await trusting.close();
    const without = createVaultBackend(moduleConfig(emu, { caFiles: [other.caFile] }), {
      credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }),
      env: {},
    });
    const error = await t.throwsAsync(without.getKey(emu.url, "ec256"), { instanceOf: VaultError });
    t.is(error?.kind, "network");
    await without.close();
  } finally {
    await other.close();
  }
});

test("a per-slot ca_file is trusted for that slot's vault", async (t) => {
  const slotTrust = createVaultBackend(
    moduleConfig(emu, { caFiles: [], slots: [{ kind: "key", label: "ec", keyName: "ec256", vaultUrl: emu.url, certificateFromConfig: false, caFile: emu.caFile }] }),
    { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }), env: {} },
  );
  t.is((await slotTrust.getKey(emu.url, "ec256")).name, "ec256");
  await slotTrust.close();
});

test("a closed port is VaultError network, well before the deadline", async (t) => {
  const port = await new Promise<number>((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port: free } = server.address() as { port: number };
      server.close(() => resolve(free));
    });
  });
  const dead = createVaultBackend(moduleConfig(emu, { timeoutMs: 60_000 }), { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }) });
  const error = await t.throwsAsync(dead.getKey(`https://127.0.0.1:${port}`, "ec256"), { instanceOf: VaultError });
  t.is(error?.kind, "network");
  t.is(error?.code, "ECONNREFUSED");
  await dead.close();
});

test("a slow vault: VaultError timeout at the deadline", async (t) => {
  const slow = await emulator({ keys: "ec:EC:P-256", latencyMs: 3000 });
  try {
    const slowToken = await managedIdentityToken(slow);
    const impatient = createVaultBackend(moduleConfig(slow, { timeoutMs: 500 }), { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: slowToken, HOME: "/nonexistent" }) });
    const error = await t.throwsAsync(impatient.getKey(slow.url, "ec"), { instanceOf: VaultError });
    t.is(error?.kind, "timeout");
    t.regex(error!.message, /within 500 ms/);
    await impatient.close();
  } finally {
    await slow.close();
  }
});

for (const [fault, faults] of [
  ["429 with Retry-After", { throttleRate: 0.5, retryAfterSeconds: 0, seed: 7 }],
  ["503", { unavailableRate: 0.5, seed: 11 }],
  ["dropped connections", { dropRate: 0.3, seed: 5 }],
] as const) {
  test(`injected ${fault}: retried, and every signature still verifies`, async (t) => {
    const flaky = await emulator({ keys: "ec:EC:P-256", faults });
    try {
      const flakyToken = await managedIdentityToken(flaky);
      const client = createVaultBackend(moduleConfig(flaky), {
        credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: flakyToken, HOME: "/nonexistent" }),
        retry: { maxRetries: 6, retryDelayInMs: 10, maxRetryDelayInMs: 50 },
      });
      const key = await client.getKey(flaky.url, "ec");
      const publicKey = publicKeyOf(key);
      for (let i = 0; i < 20; i++) {
        const message = Buffer.from(`flaky ${i}`);
        const signature = await client.sign(key, "ES256", createHash("sha256").update(message).digest());
        t.true(verify("sha256", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature));
      }
      await client.close();
    } finally {
      await flaky.close();
    }
  });
}

test("throttled on every try: VaultError throttled once retries run out", async (t) => {
  const throttled = await emulator({ keys: "ec:EC:P-256", faults: { throttleRate: 1, retryAfterSeconds: 0, seed: 1 } });
  try {
    const throttledToken = await managedIdentityToken(throttled);
    const client = createVaultBackend(moduleConfig(throttled), {
      credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: throttledToken, HOME: "/nonexistent" }),
      retry: { maxRetries: 2, retryDelayInMs: 10, maxRetryDelayInMs: 50 },
    });
    const error = await t.throwsAsync(client.getKey(throttled.url, "ec"), { instanceOf: VaultError });
    t.is(error?.kind, "throttled");
    t.is(error?.statusCode, 429);
    await client.close();
  } finally {
    await throttled.close();
  }
});

test("a Retry-After longer than the deadline is not waited for: VaultError throttled, not timeout", async (t) => {
  const throttled = await emulator({ keys: "ec:EC:P-256", faults: { throttleRate: 1, retryAfterSeconds: 30, seed: 3 } });
  try {
    const throttledToken = await managedIdentityToken(throttled);
    const client = createVaultBackend(moduleConfig(throttled, { timeoutMs: 5000 }), {
      credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: throttledToken, HOME: "/nonexistent" }),
    });
    const error = await t.throwsAsync(client.getKey(throttled.url, "ec"), { instanceOf: VaultError });
    t.is(error?.kind, "throttled");
    t.regex(error!.message, /asked to retry after 30 s, past this call's deadline/);
    await client.close();
  } finally {
    await throttled.close();
  }
});

test("retryAfterMs reads every Retry-After spelling", async (t) => {
  const { retryAfterMs } = await import("../../src/vault/deadline.ts");
  const headers = (entries: Record<string, string>) => ({ get: (name: string) => entries[name] });
  t.is(retryAfterMs(headers({ "retry-after": "3" })), 3000);
  t.is(retryAfterMs(headers({ "retry-after-ms": "250" })), 250);
  t.is(retryAfterMs(headers({ "x-ms-retry-after-ms": "40" })), 40);
  t.is(retryAfterMs(headers({ "retry-after": new Date(10_000).toUTCString() }), 4_000), 6_000);
  t.is(retryAfterMs(headers({})), undefined);
});

test("getRandomBytes: a large request is fetched in pieces, several at a time, and all of it arrives", async (t) => {
  const before = (await emu.requestCounts())["get-random-bytes"] ?? 0;
  const bytes = await backend.getRandomBytes(emu.url, 64 * 1024);
  t.is(bytes?.length, 64 * 1024);
  // 512 pieces of 128 bytes (other tests of this file may ask for random bytes at the same time).
  t.true(((await emu.requestCounts())["get-random-bytes"] ?? 0) - before >= 512);
  // Every piece was filled: no 128-byte run of zeros where a piece went missing.
  for (let offset = 0; offset < bytes!.length; offset += 128) t.false(bytes!.subarray(offset, offset + 128).equals(Buffer.alloc(128)), `piece at ${offset}`);
});

test("getRandomBytes: a request too large for the deadline fails with a timeout within it, instead of running on", async (t) => {
  const slow = await emulator({ keys: "", latencyMs: 40 });
  const slowToken = await managedIdentityToken(slow);
  const quick = createVaultBackend(moduleConfig(slow, { timeoutMs: 400 }), { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: slowToken, HOME: "/nonexistent" }) });
  t.teardown(async () => {
    await quick.close();
    await slow.close();
  });
  // 1 MiB is 8192 pieces: about 40 s at 40 ms a piece and 8 at a time, far past the 400 ms deadline.
  const error = await t.throwsAsync(quick.getRandomBytes(slow.url, 1024 * 1024), { instanceOf: VaultError });
  t.is(error?.kind, "timeout");
  t.regex(error?.message ?? "", /within 400 ms/);
  t.true(((await slow.requestCounts())["get-random-bytes"] ?? 0) < 200, "it stopped asking once the deadline passed");
});
