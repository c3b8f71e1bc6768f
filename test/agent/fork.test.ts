// fork with the agent: a C host (fork-host.c) signs, forks; the child gets CKR_CRYPTOKI_NOT_INITIALIZED until its
// own C_Initialize, which opens its own connection to the same agent; the parent keeps signing on its connection.
// Every signature the host prints is verified against the vault's JWK.
import test from "ava";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { compileDriver, keyValues, rv } from "../native/driver.ts";
import { run } from "../clients/process.ts";
import {
  FALLBACK_LINE,
  agentPid,
  clientEnv,
  describe,
  listeningPids,
  modulePath,
  readText,
  runtimeFor,
  startVault,
  verifyEcdsa,
  type ModuleFixture,
} from "./fixture.ts";

const hostSource = path.join(path.dirname(fileURLToPath(import.meta.url)), "fork-host.c");

let vault: ModuleFixture;
test.before(async () => {
  vault = await startVault("ec-key:EC:P-256");
});
test.after.always(async () => {
  await vault?.close();
});

test("a forked child initialises its own connection to the agent; parent and child signatures verify", async (t) => {
  const runtime = runtimeFor(t);
  const host = compileDriver(hostSource);
  // Debug lines show each C_Initialize's connection ("connected to the agent") and any private helper.
  const result = await run(host, [modulePath], { env: clientEnv(vault, runtime, { AZURE_KEYVAULT_PKCS11_DEBUG: "1" }) });
  t.is(result.code, 0, describe(result));
  const v = keyValues(result.stdout);
  const key = vault.key("ec-key");
  const verifies = (name: string, message: string) => {
    const hex = v.get(name);
    return hex !== undefined && verifyEcdsa(key, Buffer.from(message), Buffer.from(hex, "hex"));
  };

  t.is(v.get("parent.init"), rv.OK, describe(result));
  t.true(verifies("parent.before", "signed by the parent before fork"), describe(result));
  t.is(v.get("child.GetInfo"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("child.SignInit"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("child.init"), rv.OK);
  t.true(verifies("child.sig", "signed by the child"), describe(result));
  t.is(v.get("child.Finalize"), rv.OK);
  t.is(v.get("parent.childExit"), "0");
  t.true(verifies("parent.after", "signed by the parent after fork"), describe(result));
  t.is(v.get("parent.Finalize"), rv.OK);

  t.is(result.stderr.match(/connected to the agent at /g)?.length, 2, `one connection each for parent and child:\n${result.stderr}`);
  t.notRegex(result.stderr, /started the helper/, "no private helper");
  t.notRegex(result.stderr, FALLBACK_LINE);
  const pid = agentPid(runtime);
  t.truthy(pid);
  t.deepEqual(listeningPids(readText(runtime.logFile), runtime.socketPath), [pid!], "one agent served both");
});
