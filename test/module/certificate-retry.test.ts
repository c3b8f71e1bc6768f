// A certificate the vault fails to serve for a while (503s after the SDK's retries) is pending, not absent: the
// token's keys sign meanwhile, and the certificate object appears, with its usual handle and the vault's DER, once
// the vault serves it again, without C_Finalize. (Before the fix the token showed no certificate for the helper's
// whole life.) A key fetch that failed the same way is retried in the background. Also Token.forFind, which
// findInit can use to make a certificate find wait for the fetch in flight.
import test from "ava";
import { verify } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import pkcs11js from "pkcs11js";
import { CKA, CKO } from "../../src/pkcs11/constants.ts";
import { encodeUlong } from "../../src/token/attributes.ts";
import { objectHandle } from "../../src/token/objects.ts";
import { KeyToken } from "../../src/token/key-token.ts";
import type { VaultBackend, VaultKey } from "../../src/vault/types.ts";
import { API, attribute, findObjects, openSession, privateKeyOf, rvOf, startModuleFixture, type Handle, type ModuleFixture } from "./harness.ts";

const CERTIFICATE_FAULTS = { unavailableRate: 1, operations: ["get-certificate"] };
/** Bounds the waits for the certificate to appear: far more than the retries need, never reached when they work. */
const MAX_POLLS = 60;
const POLL_MS = 250;

let fixture: ModuleFixture;
let faultsSince = 0;
test.before(async () => {
  fixture = await startModuleFixture({
    keys: "outage:EC:P-256,flaky:RSA:2048",
    certs: "all",
    // Before C_Initialize, so that the helper's first certificate fetches fail.
    prepare: async (emulator) => {
      await emulator.setFaults(CERTIFICATE_FAULTS);
      faultsSince = Date.now();
      return [];
    },
  });
});
test.after.always(() => fixture?.close());

const handleNumber = (handle: Handle): number => Number(handle.readBigUInt64LE());
const certificateTemplate = [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }];

async function vaultCertificateDer(name: string): Promise<Buffer> {
  const response = await fixture.vaultGet(`/certificates/${name}?${API}`);
  if (response.status !== 200) throw new Error(`GET certificate ${name}: ${response.status}`);
  return Buffer.from((response.body as { cer: string }).cer, "base64");
}

/** Finds the certificate objects on `session` until there is one, a bounded number of times; [] if never. */
async function pollCertificate(session: Handle): Promise<{ found: Handle[]; polls: number }> {
  for (let polls = 1; polls <= MAX_POLLS; polls++) {
    const found = findObjects(fixture.pkcs11, session, certificateTemplate);
    if (found.length > 0) return { found, polls };
    await sleep(POLL_MS);
  }
  return { found: [], polls: MAX_POLLS };
}

function signAndVerify(keyName: string, session: Handle): boolean {
  const { pkcs11 } = fixture;
  const rsa = keyName === "flaky";
  pkcs11.C_SignInit(session, { mechanism: rsa ? pkcs11js.CKM_SHA256_RSA_PKCS : pkcs11js.CKM_ECDSA_SHA256 }, privateKeyOf(fixture, session));
  const data = Buffer.from(`signed while the certificate of ${keyName} is pending`);
  const signature = pkcs11.C_Sign(session, data, Buffer.alloc(512));
  const key = fixture.key(keyName).publicKey;
  return verify("sha256", data, rsa ? key : { key, dsaEncoding: "ieee-p1363" }, signature);
}

function slotIndex(keyName: string): number {
  return fixture.pkcs11.C_GetSlotList(true).findIndex((slot) => slot.equals(fixture.key(keyName).slot));
}

test.serial("503s on get-certificate for the first 2 s: the key signs meanwhile, then the certificate object appears with the vault's DER", async (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "outage");
  const privateKey = privateKeyOf(fixture, session);
  t.deepEqual(findObjects(pkcs11, session, certificateTemplate), [], "no certificate object during the outage");
  t.true(signAndVerify("outage", session), "the key signs while its certificate is pending");

  await sleep(Math.max(0, faultsSince + 2000 - Date.now()));
  const failedFetches = (await fixture.emulator.requestCounts("outage"))["get-certificate"] ?? 0;
  t.true(failedFetches >= 1, "the helper asked for the certificate during the outage");
  await fixture.emulator.setFaults(undefined);

  const { found, polls } = await pollCertificate(session);
  t.log(`get-certificate requests during the outage: ${failedFetches}; certificate object found on find ${polls}`);
  t.is(found.length, 1, "the certificate object appears once the vault serves it");
  t.is(handleNumber(found[0]!), objectHandle(slotIndex("outage"), "certificate"), "the certificate has its deterministic handle");
  t.deepEqual(attribute(pkcs11, session, found[0]!, pkcs11js.CKA_VALUE), await vaultCertificateDer("outage"));
  t.true(privateKeyOf(fixture, session).equals(privateKey), "the key's handle did not change");
  t.true(signAndVerify("outage", session));
  pkcs11.C_CloseSession(session);
});

test.serial("random 50% 503s on get-certificate, the first fetches all failed: both tokens' certificates converge", async (t) => {
  const { pkcs11 } = fixture;
  pkcs11.C_Finalize();
  // Seed 51 draws 503 for the first 8 get-certificate requests: each token's first fetch (a try and the SDK's 3
  // retries) fails, then about half of the requests do.
  await fixture.emulator.setFaults({ unavailableRate: 0.5, seed: 51, operations: ["get-certificate"] });
  pkcs11.C_Initialize();
  const names = ["outage", "flaky"];
  const sessions = names.map((name) => openSession(fixture, name));
  for (const [index, session] of sessions.entries()) {
    t.true(signAndVerify(names[index]!, session), `${names[index]} signs while its certificate is pending`);
    // A find for a certificate would start a new fetch at once (Token.forFind), so the failed first fetch is shown by
    // its requests: a try and the SDK's three retries, all answered 503.
    const requests = (await fixture.emulator.requestCounts(names[index]!))["get-certificate"] ?? 0;
    t.true(requests >= 4, `${names[index]}: the first fetch failed after ${requests} requests`);
  }
  const results = [];
  for (const session of sessions) results.push(await pollCertificate(session));
  await fixture.emulator.setFaults(undefined);
  for (const [index, { found, polls }] of results.entries()) {
    const name = names[index]!;
    t.log(`${name}: certificate object found on find ${polls}`);
    t.is(found.length, 1, `${name}: the certificate object appears`);
    t.is(handleNumber(found[0]!), objectHandle(slotIndex(name), "certificate"));
    t.deepEqual(attribute(pkcs11, sessions[index]!, found[0]!, pkcs11js.CKA_VALUE), await vaultCertificateDer(name));
    pkcs11.C_CloseSession(sessions[index]!);
  }
});

test.serial("503s on get-key at C_Initialize: CKR_DEVICE_ERROR meanwhile, then the helper fetches the key again in the background", async (t) => {
  const { pkcs11, emulator } = fixture;
  pkcs11.C_Finalize();
  await emulator.setFaults({ unavailableRate: 1, operations: ["get-key"] });
  pkcs11.C_Initialize();
  const session = openSession(fixture, "outage");
  t.is(rvOf(() => pkcs11.C_FindObjectsInit(session, [])), pkcs11js.CKR_DEVICE_ERROR, "the key cannot be fetched");
  const before = (await emulator.requestCounts("outage"))["get-key"] ?? 0;
  await emulator.setFaults(undefined);
  // No PKCS#11 call from here until the helper has asked for the key again by itself.
  let after = before;
  for (let polls = 0; polls < MAX_POLLS && after === before; polls++) {
    await sleep(POLL_MS);
    after = (await emulator.requestCounts("outage"))["get-key"] ?? 0;
  }
  t.true(after > before, "the helper retried the key fetch in the background");
  const privateKey = privateKeyOf(fixture, session);
  t.is(handleNumber(privateKey), objectHandle(slotIndex("outage"), "private"));
  t.true(signAndVerify("outage", session));
  const [certificate] = findObjects(pkcs11, session, certificateTemplate);
  t.deepEqual(attribute(pkcs11, session, certificate!, pkcs11js.CKA_VALUE), await vaultCertificateDer("outage"), "the certificate, read at the first attempt, is there");
  pkcs11.C_CloseSession(session);
});

// ---- Token.forFind, in process against a backend whose certificate fetch the test controls ----------------

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

test.serial("Token.forFind: a find that can match the certificate waits for its fetch; a find for a key does not", async (t) => {
  const jwk = fixture.key("outage").jwk;
  const der = await vaultCertificateDer("outage");
  const key: VaultKey = {
    name: "outage",
    version: "1",
    kid: jwk.kid,
    vaultUrl: fixture.emulator.url,
    tags: {},
    kty: jwk.kty,
    crv: jwk.crv!,
    x: Buffer.from(jwk.x!, "base64url"),
    y: Buffer.from(jwk.y!, "base64url"),
    keyOps: jwk.key_ops,
    enabled: true,
    managedHsm: false,
  };
  const fetches: Array<ReturnType<typeof deferred<Buffer | undefined>>> = [];
  const backend = {
    getKey: async () => key,
    getCertificate: () => {
      const fetch = deferred<Buffer | undefined>();
      fetches.push(fetch);
      return fetch.promise;
    },
  } as unknown as VaultBackend;
  const token = new KeyToken(0, { kind: "key", label: "outage", keyName: "outage", vaultUrl: fixture.emulator.url, certificateFromConfig: false }, backend, 8);
  const loading = token.load();
  fetches[0]!.reject(new Error("simulated 503"));
  const loaded = await loading;
  t.deepEqual(loaded.objects.map((object) => object.kind), ["private", "public"]);
  t.true(token.certificatePending);

  const keyFind = token.forFind([{ type: CKA.CLASS, value: encodeUlong(CKO.PRIVATE_KEY, 8) }]);
  t.false(keyFind instanceof Promise, "a find for the private key is answered at once");
  const certificateFind = token.forFind([{ type: CKA.CLASS, value: encodeUlong(CKO.CERTIFICATE, 8) }]);
  const everythingFind = token.forFind([]);
  t.true(certificateFind instanceof Promise && everythingFind instanceof Promise, "finds that can match the certificate wait");
  t.is(fetches.length, 2, "one fetch for both waiting finds");
  fetches[1]!.resolve(der);
  for (const find of [await certificateFind, await everythingFind]) {
    t.deepEqual(find.objects.map((object) => object.kind), ["private", "public", "certificate"]);
    t.is(find.objects[2]!.handle, objectHandle(0, "certificate"));
  }
  t.false(token.certificatePending);
  t.is(token.forFind([]), token.current!, "settled: no more waiting");
  t.is(fetches.length, 2);
});
