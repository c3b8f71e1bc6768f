// C_Initialize and C_Finalize: pInitArgs rules, repeated cycles without leaks, the application's mutex
// callbacks, and start-up failures.
import test from "ava";
import { onlyDriverLines, runDriver, rv } from "./driver.ts";

test("pInitArgs is checked as PKCS#11 requires, and the module runs without creating threads", async (t) => {
  const run = await runDriver("basic");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("init.reserved"), rv.ARGUMENTS_BAD);
  t.is(v.get("init.partialMutex"), rv.ARGUMENTS_BAD);
  // The module creates no thread (GnuTLS, hence p11tool, passes CKF_LIBRARY_CANT_CREATE_OS_THREADS).
  t.is(v.get("init.cantCreateThreads"), rv.OK);
  t.is(v.get("init.cantCreateThreads.threads"), "1");
  t.is(v.get("init.cantCreateThreads.sign"), "1");
  t.is(v.get("init.cantCreateThreads.Finalize"), rv.OK);
  t.is(v.get("init"), rv.OK);
  t.is(v.get("init.again"), rv.CRYPTOKI_ALREADY_INITIALIZED);
});

test("50 finalize/initialize cycles leak no descriptors, threads or child processes", async (t) => {
  const run = await runDriver("cycles", ["50"]);
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("warmup.init"), rv.OK);
  t.is(v.get("cycles.ok"), "50");
  t.is(v.get("cycles.fdsAfter"), v.get("cycles.fdsBefore"));
  t.is(v.get("cycles.threadsAfter"), v.get("cycles.threadsBefore"));
  t.is(v.get("cycles.threadsAfter"), "1");
  t.is(v.get("cycles.children"), "0");
  t.notRegex(run.stderr, /AZURE_KEYVAULT/, "a clean finalize logs nothing without AZURE_KEYVAULT_PKCS11_DEBUG");
});

test("the application's mutex callbacks become the library's global lock", async (t) => {
  const run = await runDriver("mutex");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("init"), rv.OK);
  t.is(v.get("mutex.signs"), "3");
  t.is(v.get("Finalize"), rv.OK);
  t.is(v.get("mutex.creates"), "1");
  t.is(v.get("mutex.destroys"), "1");
  t.is(v.get("mutex.locksAtLeast6"), "1");
  t.is(v.get("mutex.balanced"), "1");
});

test("a bad config fails C_Initialize with CKR_GENERAL_ERROR and the helper's one line", async (t) => {
  const run = await runDriver("init", [], { env: { FAKE_HELPER_MODE: "bad-config" } });
  t.is(run.status, 0, run.stderr);
  t.is(run.values.get("init"), rv.GENERAL_ERROR);
  t.is(run.values.get("GetInfo"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(run.values.get("children"), "0");
  t.deepEqual(run.stderr.trim().split("\n"), ["AZURE_KEYVAULT: /fake/config.json: slots[0].key_name: must be a string"]);
});

for (const mode of ["die-at-start", "die-on-init"]) {
  test(`a helper that exits during start-up (${mode}) fails C_Initialize with a clear line`, async (t) => {
    const run = await runDriver("init", [], { env: { FAKE_HELPER_MODE: mode } });
    t.is(run.status, 0, run.stderr);
    t.is(run.values.get("init"), rv.GENERAL_ERROR);
    t.is(run.values.get("GetInfo"), rv.CRYPTOKI_NOT_INITIALIZED);
    t.is(run.values.get("children"), "0");
    t.regex(run.stderr, /^AZURE_KEYVAULT: the helper \(pid \d+\) stopped before answering C_Initialize$/m);
    t.regex(run.stderr, /^AZURE_KEYVAULT: C_Initialize failed: the helper did not start/m);
    t.true(onlyDriverLines(run.stdout), run.stdout);
  });
}

test("a missing node executable or helper script fails C_Initialize with CKR_GENERAL_ERROR", async (t) => {
  const noNode = await runDriver("init", [], { env: { AZURE_KEYVAULT_PKCS11_NODE: "/nonexistent/node" } });
  t.is(noNode.values.get("init"), rv.GENERAL_ERROR);
  t.regex(noNode.stderr, /AZURE_KEYVAULT: cannot start the helper `\/nonexistent\/node .*`: No such file or directory/);
  const noHelper = await runDriver("init", [], { env: { AZURE_KEYVAULT_PKCS11_HELPER: "/nonexistent/helper.cjs" } });
  t.is(noHelper.values.get("init"), rv.GENERAL_ERROR);
  t.regex(noHelper.stderr, /AZURE_KEYVAULT: cannot read the helper \/nonexistent\/helper\.cjs/);
  t.is(noHelper.values.get("children"), "0");
});
