// Fork: the child gets CKR_CRYPTOKI_NOT_INITIALIZED until it calls C_Initialize, which spawns its own helper and
// leaves the parent's alone; the parent keeps working.
import test from "ava";
import { runDriver, rv } from "./driver.ts";

test("a forked child re-initialises with its own helper and the parent keeps working", async (t) => {
  const run = await runDriver("fork");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("parent.init"), rv.OK);
  t.is(v.get("parent.signBefore"), "1");
  t.is(v.get("parent.sockets"), "1");

  // The child drops its copy of the parent's link at fork, so the parent's helper still sees end-of-file when
  // the parent goes away.
  t.is(v.get("child.inheritedSockets"), "0");
  t.is(v.get("child.GetInfo"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("child.Sign"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("child.InitToken"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("child.Finalize"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("child.init"), rv.OK);
  t.is(v.get("child.sign"), "1");
  t.is(v.get("child.ownHelper"), "1");
  t.is(v.get("child.parentHelperAlive"), "1");
  t.is(v.get("child.Finalize2"), rv.OK);
  t.is(v.get("child.children"), "0");

  t.is(v.get("parent.childExit"), "0");
  t.is(v.get("parent.signAfter"), "1");
  t.is(v.get("parent.sameHelper"), "1");
  t.is(v.get("parent.Finalize"), rv.OK);
  t.notRegex(run.stderr, /AZURE_KEYVAULT/);
});
