// The `emulator` subcommand as users run it: one READY line on stdout, logs on stderr, clean exit on SIGTERM/SIGINT.
import test from "ava";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { managedIdentityToken, raw } from "./raw.ts";

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

interface Run {
  ready: Promise<{ line: string; ms: number }>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  kill(signal: NodeJS.Signals): void;
}

function runCli(args: string[]): Run {
  const started = performance.now();
  const child = spawn(process.execPath, ["--import=tsx", MAIN, "emulator", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let onReady: (v: { line: string; ms: number }) => void;
  const ready = new Promise<{ line: string; ms: number }>((resolve) => (onReady = resolve));
  child.stdout.on("data", (d: Buffer) => {
    stdout += d;
    const line = stdout.split("\n")[0]!;
    if (stdout.includes("\n")) onReady({ line, ms: performance.now() - started });
  });
  child.stderr.on("data", (d: Buffer) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      onReady({ line: "", ms: -1 });
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { ready, exit, kill: (signal) => child.kill(signal) };
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  test(`prints exactly one READY line, serves, and exits 0 on ${signal}`, async (t) => {
    const run = runCli(["--port", "0", "--keys", "rsa-signing-key:RSA:2048,ec-signing-key:EC:P-256", "--certs", "all", "--tenant-id", "tenant-x", "--identity-header", "header-secret"]);
    const { line, ms } = await run.ready;
    t.log(`READY after ${ms.toFixed(0)} ms (node + tsx start-up included)`);
    t.regex(line, /^READY \{.*\}$/);
    const ready = JSON.parse(line.slice("READY ".length));
    t.deepEqual(Object.keys(ready).sort(), ["caFile", "identityEndpoint", "identityHeader", "tenantId", "url"]);
    t.regex(ready.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    t.is(ready.tenantId, "tenant-x");
    t.is(ready.identityHeader, "header-secret");
    const ca = readFileSync(ready.caFile, "utf8");
    const token = await managedIdentityToken(ready);
    const res = await raw(`${ready.url}/keys/ec-signing-key?api-version=2025-07-01`, { ca, headers: { authorization: `Bearer ${token}` } });
    t.is(res.status, 200);
    t.is(res.json.key.crv, "P-256");
    run.kill(signal);
    const exit = await run.exit;
    t.is(exit.code, 0, exit.stderr);
    t.is(exit.stdout, `${line}\n`, "stdout holds the READY line and nothing else");
    t.false(existsSync(ready.caFile), "the temporary CA file is removed on exit");
  });
}

test("a random identity header when none is given; --ca-dir reuses its CA; --ca-out writes a copy", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "emulator-cli-test-"));
  try {
    const caDir = join(dir, "ca");
    const first = runCli(["--keys", "k:EC:P-256", "--ca-dir", caDir, "--ca-out", join(dir, "copy.pem")]);
    const ready1 = JSON.parse((await first.ready).line.slice(6));
    t.true(ready1.identityHeader.length >= 16);
    t.is(ready1.caFile, join(caDir, "ca.pem"));
    const ca1 = readFileSync(ready1.caFile, "utf8");
    t.is(readFileSync(join(dir, "copy.pem"), "utf8"), ca1);
    first.kill("SIGTERM");
    t.is((await first.exit).code, 0);
    const second = runCli(["--keys", "k:EC:P-256", "--ca-dir", caDir]);
    const ready2 = JSON.parse((await second.ready).line.slice(6));
    t.is(readFileSync(ready2.caFile, "utf8"), ca1, "the CA is reused");
    t.not(ready2.identityHeader, ready1.identityHeader);
    const token = await managedIdentityToken(ready2);
    t.is((await raw(`${ready2.url}/keys/k?api-version=7.6`, { ca: ca1, headers: { authorization: `Bearer ${token}` } })).status, 200);
    second.kill("SIGTERM");
    t.is((await second.exit).code, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const [args, pattern] of [
  [["--keys", "bad"], /expected name:TYPE:SIZE/],
  [["--keys", "k:RSA:1024"], /2048, 3072, 4096/],
  [["--keys", "k:EC:P-192"], /unknown curve/],
  [["--keys", "k:RSA:2048", "--certs", "other"], /no key of the same name/],
  [["--port", "abc"], /not a whole number/],
  [["--throttle-rate", "2"], /between 0 and 1/],
  [["--bogus"], /Unknown option/],
  [["--managed-hsm", "--keys", "k:RSA:2048"], /not supported by Managed HSM/],
  [["--deny", "keys/create,keys/frobnicate"], /unknown permission\(s\) 'keys\/frobnicate'/],
] as Array<[string[], RegExp]>) {
  test(`refuses ${args.join(" ")} with a clear message and no READY line`, async (t) => {
    const exit = await runCli(args).exit;
    t.not(exit.code, 0);
    t.is(exit.stdout, "");
    t.regex(exit.stderr, pattern);
  });
}

test("--managed-hsm challenges for https://managedhsm.azure.net; --deny refuses the permissions it names", async (t) => {
  const run = runCli(["--managed-hsm", "--keys", "aes:oct-HSM:256", "--deny", "keys/get,keys/list"]);
  const ready = JSON.parse((await run.ready).line.slice("READY ".length));
  const ca = readFileSync(ready.caFile, "utf8");
  const anonymous = await raw(`${ready.url}/keys/aes?api-version=2025-07-01`, { ca });
  t.regex(String(anonymous.headers["www-authenticate"]), /resource="https:\/\/managedhsm\.azure\.net"$/);
  const token = await managedIdentityToken(ready, "https://managedhsm.azure.net");
  const denied = await raw(`${ready.url}/keys/aes?api-version=2025-07-01`, { ca, headers: { authorization: `Bearer ${token}` } });
  t.is(denied.status, 403);
  t.is(denied.json.error.innererror.code, "ForbiddenByPolicy");
  const rng = await raw(`${ready.url}/rng?api-version=2025-07-01`, { ca, method: "POST", headers: { authorization: `Bearer ${token}` }, body: { count: 4 } });
  t.is(rng.status, 200);
  run.kill("SIGTERM");
  t.is((await run.exit).code, 0);
});
