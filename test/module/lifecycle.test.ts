// C_Finalize/C_Initialize cycles, and a helper that dies: the next call starts a new one, and a later
// finalize + initialize works as ever. (Sessions across a helper's death: respawn.test.ts.)
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

test.serial("a killed helper is replaced by the next call; finalize + initialize still works after it", async (t) => {
  const { pkcs11 } = fixture;
  t.true(signsAndVerifies());
  const [pid] = helperPids();
  t.truthy(pid);
  process.kill(pid!, "SIGKILL");
  await waitUntil(() => !helperPids().includes(pid!));
  const slot = fixture.key("ec").slot;
  // The death is noticed before this request is sent, so it runs on the replacement.
  t.is(pkcs11.C_GetTokenInfo(slot).label.trim(), "ec");
  t.true(signsAndVerifies());
  const replacement = helperPids();
  t.is(replacement.length, 1);
  t.not(replacement[0], pid);
  pkcs11.C_Finalize();
  pkcs11.C_Initialize();
  t.true(signsAndVerifies());
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
