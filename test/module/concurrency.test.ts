// 16 signers at once through pkcs11js's async API, on RSA and EC tokens, against an emulator that adds latency:
// every signature must verify. (How well it scales is measured in bench/, not asserted here.)
import test from "ava";
import { constants, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { openSession, privateKeyOf, startModuleFixture, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa:RSA:2048,ec:EC:P-256", latencyMs: 20 });
});
test.after.always(() => fixture?.close());

test("16 concurrent signers, each on its own session, all produce valid signatures", async (t) => {
  const { pkcs11 } = fixture;
  const jobs = Array.from({ length: 16 }, (_, index) => {
    const keyName = index % 2 === 0 ? "rsa" : "ec";
    const session = openSession(fixture, keyName);
    const mechanism = keyName === "rsa" ? pkcs11js.CKM_SHA256_RSA_PKCS : pkcs11js.CKM_ECDSA_SHA256;
    pkcs11.C_SignInit(session, { mechanism }, privateKeyOf(fixture, session));
    const data = Buffer.from(`message ${index}`);
    return { keyName, session, data, signature: pkcs11.C_SignAsync(session, data, Buffer.alloc(512)) };
  });
  const signatures = await Promise.all(jobs.map((job) => job.signature));
  jobs.forEach((job, index) => {
    const key = fixture.key(job.keyName).publicKey;
    const options = job.keyName === "rsa" ? { key, padding: constants.RSA_PKCS1_PADDING } : { key, dsaEncoding: "ieee-p1363" as const };
    t.true(verify("sha256", job.data, options, signatures[index]!), `signer ${index}`);
    pkcs11.C_CloseSession(job.session);
  });
});

test("many signatures in sequence on one session, interleaved with other sessions' calls", async (t) => {
  const { pkcs11 } = fixture;
  const session = openSession(fixture, "ec");
  const key = privateKeyOf(fixture, session);
  for (let round = 0; round < 8; round++) {
    pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, key);
    const data = Buffer.from(`round ${round}`);
    const [signature] = await Promise.all([pkcs11.C_SignAsync(session, data, Buffer.alloc(128)), Promise.resolve(pkcs11.C_GetTokenInfo(fixture.key("rsa").slot))]);
    t.true(verify("sha256", data, { key: fixture.key("ec").publicKey, dsaEncoding: "ieee-p1363" }, signature));
  }
  pkcs11.C_CloseSession(session);
});
