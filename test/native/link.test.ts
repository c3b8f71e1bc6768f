// The helper link: many calls in flight from many threads, the call timeout, and a helper that dies.
import test from "ava";
import { onlyDriverLines, runDriver, rv } from "./driver.ts";

test("16 threads sign concurrently over one link and every reply reaches its caller", async (t) => {
  const run = await runDriver("threads", ["16", "20"]);
  t.is(run.status, 0, run.stderr);
  t.is(run.values.get("init"), rv.OK);
  t.is(run.values.get("threads.ok"), String(16 * 20));
  // The fake helper counts the requests it holds at once: a link that serialised calls would show 1.
  t.true(Number(run.values.get("threads.maxInFlight")) > 1, run.stdout);
  t.is(run.values.get("Finalize"), rv.OK);
});

test("a call the helper does not answer in time gets CKR_DEVICE_ERROR and a log line; the link survives", async (t) => {
  const run = await runDriver("timeout", [], { env: { AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS: "2000" } });
  t.is(run.status, 0, run.stderr);
  t.is(run.values.get("sign.slow"), rv.DEVICE_ERROR);
  t.regex(run.stderr, /AZURE_KEYVAULT: C_Sign: the helper did not answer within 2000 ms/);
  t.is(run.values.get("sign.afterTimeout"), "1");
  t.is(run.values.get("Finalize"), rv.OK);
});

test("a helper that dies mid-call gives CKR_DEVICE_ERROR until C_Finalize; C_Initialize spawns a new one", async (t) => {
  const run = await runDriver("kill");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("sign.die"), rv.DEVICE_ERROR);
  t.is(v.get("sign.afterDeath"), rv.DEVICE_ERROR);
  t.is(v.get("Finalize"), rv.OK);
  t.is(v.get("reinit"), rv.OK);
  t.is(v.get("sign.afterReinit"), "1");
  // Killed with SIGKILL from outside while another thread waits for it.
  t.is(v.get("sign.killedMidCall"), rv.DEVICE_ERROR);
  t.is(v.get("Finalize2"), rv.OK);
  t.is(v.get("reinit2"), rv.OK);
  t.is(v.get("sign.afterReinit2"), "1");
  t.is(v.get("helper.newPid"), "1");
  t.is(v.get("children"), "0");
  t.regex(run.stderr, /AZURE_KEYVAULT: lost the connection to the helper/);
  t.regex(run.stderr, /AZURE_KEYVAULT: the helper \(pid \d+\) was killed by signal 9/);
});

test("the module writes nothing to the host's stdout, even with debug logging on", async (t) => {
  const run = await runDriver("basic", [], { env: { AZURE_KEYVAULT_PKCS11_DEBUG: "1" } });
  t.is(run.status, 0, run.stderr);
  t.is(run.values.get("done"), "1");
  t.true(onlyDriverLines(run.stdout), run.stdout);
  t.notRegex(run.stdout, /AZURE_KEYVAULT|fake-helper/);
  // Debug lines go to stderr, with the prefix.
  t.regex(run.stderr, /^AZURE_KEYVAULT: started the helper `.+ .+fake-helper\.mjs` as pid \d+$/m);
});
