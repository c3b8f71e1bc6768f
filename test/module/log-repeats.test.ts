// An outage fails every call the same way; the host's stderr gets one line for it per minute, not one per call.
import test from "ava";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { compileDriver, keyValues, rv as CKR } from "../native/driver.ts";
import { modulePath, repoRoot, startEmulator } from "./harness.ts";

const CALLS = 8;

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test("a vault that stays down: the same failure of many calls is logged once", async (t) => {
  const emulator = await startEmulator({ keys: "" });
  const dir = await mkdtemp(path.join(tmpdir(), "akv-log-repeats-"));
  t.teardown(async () => {
    await emulator.close();
    await rm(dir, { recursive: true, force: true });
  });
  const configPath = path.join(dir, "config.json");
  await writeFile(configPath, JSON.stringify({ slots: [{ label: "down", key_name: "down", vault_url: `https://127.0.0.1:${await closedPort()}` }] }));
  const driver = compileDriver(path.join(repoRoot, "test", "module", "repeat-driver.c"));
  const env = {
    ...process.env,
    AZURE_KEYVAULT_PKCS11_CONFIG: configPath,
    AZURE_KEYVAULT_PKCS11_TIMEOUT_MS: "300",
    IDENTITY_ENDPOINT: emulator.identityEndpoint,
    IDENTITY_HEADER: emulator.identityHeader,
    NODE_EXTRA_CA_CERTS: emulator.caFile,
    HOME: dir,
  };
  const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
    execFile(driver, [modulePath, String(CALLS)], { env, timeout: 60_000, encoding: "utf8" }, (error, out, err) =>
      error ? reject(new Error(`${error.message}\n${out}\n${err}`)) : resolve({ stdout: out, stderr: err }),
    ),
  );
  const values = keyValues(stdout);
  t.is(values.get("init"), CKR.OK);
  t.is(values.get("open"), CKR.OK);
  for (let i = 0; i < CALLS; i++) t.is(values.get(`signInit.${i}`), CKR.DEVICE_ERROR, `call ${i}`);
  const lines = stderr.split("\n").filter((line) => line.trim() !== "");
  // Every call failed for the same reasons (the key, and the certificate fetched beside it): each is said once,
  // and no per-call line repeats it.
  const aboutTheOutage = lines.filter((line) => line.includes("down"));
  t.deepEqual([...new Set(aboutTheOutage)], aboutTheOutage, stderr);
  t.true(aboutTheOutage.length >= 1 && aboutTheOutage.length <= 2, stderr);
  t.true(aboutTheOutage.some((line) => /^AZURE_KEYVAULT: error: down: load failed: (network|timeout)/.test(line)), stderr);
});
