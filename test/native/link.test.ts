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

test("a call the helper does not answer in time gets CKR_DEVICE_ERROR; that helper is stopped at once and the next call runs on a new one", async (t) => {
  const run = await runDriver("timeout", [], { env: { AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS: "2000" } });
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("sign.slow"), rv.DEVICE_ERROR);
  t.regex(run.stderr, /AZURE_KEYVAULT: C_Sign: the helper \(pid \d+\) did not answer within 2000 ms/);
  // Killed and reaped before C_Sign returned: it can never answer the abandoned call later.
  t.is(v.get("afterTimeout.children"), "0");
  t.is(v.get("afterTimeout.oldHelperGone"), "1");
  t.is(v.get("sign.afterTimeout"), "1");
  t.is(v.get("helper.replaced"), "1");
  t.is(v.get("Finalize"), rv.OK);
});

test("a helper that dies is reaped at once and replaced by the next call, idle or mid-call; sessions are handed over", async (t) => {
  const run = await runDriver("kill");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("open"), rv.OK);
  t.is(v.get("sign.die"), rv.DEVICE_ERROR);
  t.is(v.get("afterDeath.children"), "0");
  t.is(v.get("sign.afterDeath"), "1");
  // The replacement was told about the open session.
  t.is(v.get("afterDeath.restores"), "1");
  t.is(v.get("sign.afterIdleKill"), "1");
  t.is(v.get("idleKill.newPid"), "1");
  // Killed with SIGKILL from outside while another thread waits for it.
  t.is(v.get("sign.killedMidCall"), rv.DEVICE_ERROR);
  t.is(v.get("midCall.children"), "0");
  t.is(v.get("sign.afterMidCallKill"), "1");
  t.is(v.get("midCall.newPid"), "1");
  t.is(v.get("Finalize"), rv.OK);
  t.is(v.get("children"), "0");
  // C_Finalize forgets the sessions: a new C_Initialize restores nothing.
  t.is(v.get("reinit"), rv.OK);
  t.is(v.get("sign.afterReinit"), "1");
  t.is(v.get("afterReinit.restores"), "0");
  t.regex(run.stderr, /AZURE_KEYVAULT: lost the connection to the helper/);
  t.regex(run.stderr, /AZURE_KEYVAULT: the helper \(pid \d+\) was replaced by the helper \(pid \d+\)/);
});

test("a replacement that dies at start-up again and again is retried with a back-off, not in a fork loop", async (t) => {
  const run = await runDriver("backoff", [], { env: { AZURE_KEYVAULT_PKCS11_DEBUG: "1" } });
  t.is(run.status, 0, run.stderr);
  t.is(run.values.get("init"), rv.OK);
  t.is(run.values.get("outage.deviceErrors"), "200");
  t.is(run.values.get("recovered"), "1");
  // 200 failing calls in a tight loop started at most a handful of helpers: the first, one failed replacement
  // before the back-off, and the few the recovery loop's 100 ms steps allow.
  const started = run.stderr.match(/started the helper/g)?.length ?? 0;
  t.true(started >= 3 && started <= 6, `${started} helpers started\n${run.stderr}`);
  t.regex(run.stderr, /a new helper failed to start 1 times in a row; not starting another for \d+ ms/);
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
