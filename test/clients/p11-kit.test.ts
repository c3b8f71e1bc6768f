// The shipped p11-kit module file (config/azure-keyvault-pkcs11.module): installed as a user module, p11-kit and
// p11tool (which loads p11-kit's registered modules when given no --provider) find the module's tokens by name.
import test from "ava";
import { chmod, chown, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, repoRoot, startClientFixture, type ClientFixture } from "./harness.ts";

let fixture: ClientFixture;

/** nobody's own runtime folder, when the clients use the agent: the fixture's belongs to root, and is 0700. */
let nobodyRuntime: string | undefined;

/** p11-kit ignores user configuration in programs running as root, so as root the commands run as nobody. */
function asUser(file: string, args: string[]) {
  if (process.getuid?.() !== 0) return fixture.run(file, args);
  const env = nobodyRuntime ? { ...fixture.env, XDG_RUNTIME_DIR: nobodyRuntime } : fixture.env;
  return fixture.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", file, ...args], { env });
}

/** The agent nobody's clients started, if any: stopped by its pid file, as the fixture stops its own. */
async function stopNobodysAgent(): Promise<void> {
  if (!nobodyRuntime) return;
  try {
    const pid = Number((await readFile(path.join(nobodyRuntime, "azure-keyvault-pkcs11", "agent.pid"), "utf8")).trim());
    if (Number.isInteger(pid) && pid > 1) process.kill(pid, "SIGTERM");
  } catch {
    // No agent was started, or it is gone already.
  }
}

test.before(async () => {
  fixture = await startClientFixture();
  // nobody must be able to read HOME, config.json and the emulator CA file in the fixture folder.
  await chmod(fixture.dir, 0o755);
  if (process.getuid?.() === 0 && fixture.env.AZURE_KEYVAULT_PKCS11_AGENT === "1") {
    nobodyRuntime = path.join(fixture.dir, "run-nobody");
    await mkdir(nobodyRuntime, { mode: 0o700 });
    await chown(nobodyRuntime, 65534, 65534);
  }
  const shipped = await readFile(path.join(repoRoot, "config", "azure-keyvault-pkcs11.module"), "utf8");
  // The shipped file names the module relative to p11-kit's module directory; the build is not installed there.
  const moduleLine = /^module:\s*azure-keyvault-pkcs11\.so\s*$/m;
  if (!moduleLine.test(shipped)) throw new Error("config/azure-keyvault-pkcs11.module has no `module: azure-keyvault-pkcs11.so` line");
  const modules = path.join(fixture.env.HOME as string, ".config", "pkcs11", "modules");
  await mkdir(modules, { recursive: true });
  await writeFile(path.join(modules, "azure-keyvault-pkcs11.module"), shipped.replace(moduleLine, `module: ${fixture.modulePath}`));
});

test.after.always(async () => {
  await stopNobodysAgent();
  await fixture?.close();
});

test("p11-kit list-modules shows the module and its tokens", async (t) => {
  const result = await asUser("p11-kit", ["list-modules"]);
  t.is(result.code, 0, describe(result));
  t.regex(result.stdout, /^azure-keyvault-pkcs11: /m, describe(result));
  for (const key of fixture.keys) t.regex(result.stdout, new RegExp(`^\\s+token: ${key.tokenLabel}$`, "m"), describe(result));
});

test("p11tool finds the tokens through p11-kit without --provider", async (t) => {
  const result = await asUser("p11tool", ["--list-tokens"]);
  t.is(result.code, 0, describe(result));
  for (const key of fixture.keys) t.regex(result.stdout, new RegExp(`^\\s*Label: ${key.tokenLabel}$`, "m"), describe(result));
});
