// C_Finalize/C_Initialize cycles, and a helper that dies: calls fail with CKR_DEVICE_ERROR until the application
// finalizes and initializes again, which starts a new helper.
import test from "ava";
import { verify } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import pkcs11js from "pkcs11js";
import { childPids, rvOf, signOnce, startModuleFixture, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "ec:EC:P-256" });
});
test.after.always(() => fixture?.close());

function helperPids(): number[] {
  return childPids().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("helper.cjs");
    } catch {
      return false;
    }
  });
}

function signsAndVerifies(): boolean {
  const data = Buffer.from("still alive");
  const signature = signOnce(fixture, "ec", { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, data);
  return verify("sha256", data, { key: fixture.key("ec").publicKey, dsaEncoding: "ieee-p1363" }, signature);
}

async function waitUntil(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 25));
}

test.serial("finalize and initialize again, several times", async (t) => {
  const { pkcs11 } = fixture;
  for (let cycle = 0; cycle < 4; cycle++) {
    t.true(signsAndVerifies(), `cycle ${cycle}`);
    pkcs11.C_Finalize();
    t.is(rvOf(() => pkcs11.C_GetSlotList(true)), pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED);
    // The helper exits after answering C_Finalize.
    await waitUntil(() => helperPids().length === 0);
    t.deepEqual(helperPids(), []);
    pkcs11.C_Initialize();
  }
  t.true(signsAndVerifies());
});

test.serial("a killed helper gives CKR_DEVICE_ERROR; finalize + initialize recovers", async (t) => {
  const { pkcs11 } = fixture;
  t.true(signsAndVerifies());
  const [pid] = helperPids();
  t.truthy(pid);
  process.kill(pid!, "SIGKILL");
  await waitUntil(() => !helperPids().includes(pid!));
  const slot = fixture.key("ec").slot;
  t.is(rvOf(() => pkcs11.C_GetTokenInfo(slot)), pkcs11js.CKR_DEVICE_ERROR);
  t.is(rvOf(() => pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION)), pkcs11js.CKR_DEVICE_ERROR);
  rvOf(() => pkcs11.C_Finalize());
  pkcs11.C_Initialize();
  t.true(signsAndVerifies());
  t.not(helperPids()[0], pid);
});

test.serial("a bad config fails C_Initialize with CKR_GENERAL_ERROR; a fixed one initializes", async (t) => {
  const { pkcs11 } = fixture;
  pkcs11.C_Finalize();
  const good = readFileSync(fixture.configPath, "utf8");
  writeFileSync(fixture.configPath, '{"slots": [{"label": "no key name"}]}');
  try {
    t.is(rvOf(() => pkcs11.C_Initialize()), pkcs11js.CKR_GENERAL_ERROR);
    t.is(rvOf(() => pkcs11.C_GetSlotList(true)), pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED);
  } finally {
    writeFileSync(fixture.configPath, good);
  }
  pkcs11.C_Initialize();
  t.true(signsAndVerifies());
});
