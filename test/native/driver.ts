// Compiles test/native/driver.c and runs it against build/azure-keyvault-pkcs11.so with the fake helper
// (test/fixtures/fake-helper.mjs). The driver prints "key value" lines; the tests assert on them.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const modulePath = path.join(repo, "build", "azure-keyvault-pkcs11.so");
export const fakeHelperPath = path.join(repo, "test", "fixtures", "fake-helper.mjs");
const driverSource = path.join(repo, "test", "native", "driver.c");

const compiled = new Map<string, string>();

/** Compiles a C test driver (a PKCS#11 host) against the p11-kit headers, once per source file and flags. */
export function compileDriver(source: string, flags: readonly string[] = []): string {
  const key = [source, ...flags].join(" ");
  const done = compiled.get(key);
  if (done !== undefined) return done;
  const out = path.join(mkdtempSync(path.join(tmpdir(), "akv-driver-")), path.basename(source, ".c"));
  const cflags = execFileSync("pkg-config", ["--cflags", "p11-kit-1"], { encoding: "utf8" }).trim().split(/\s+/);
  execFileSync("cc", ["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-Wall", "-Wextra", "-Werror", ...flags, ...cflags, "-o", out,
    source, "-ldl", "-lpthread"]);
  compiled.set(key, out);
  return out;
}

/** The compiled driver; the module must have been built (`npm run build:native`). */
export function driverPath(): string {
  if (!existsSync(modulePath)) throw new Error(`${modulePath} is missing: run \`npm run build:native\` first`);
  return compileDriver(driverSource);
}

/**
 * Runs a compiled host against the real helper (the test's own environment) and returns its "key value" lines;
 * a host that exits non-zero rejects with its output.
 */
export function runHost(binary: string, args: readonly string[]): Promise<{ stdout: string; values: Map<string, string> }> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { env: process.env, timeout: 60_000, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`${error.message}\n${stdout}\n${stderr}`));
      resolve({ stdout, values: keyValues(stdout) });
    });
  });
}

/** A driver's "key value" lines; the first value printed for a key wins. */
export function keyValues(stdout: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const space = line.indexOf(" ");
    if (space > 0 && !values.has(line.slice(0, space))) values.set(line.slice(0, space), line.slice(space + 1));
  }
  return values;
}

export interface DriverRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** The value printed for each key (the first occurrence). */
  values: Map<string, string>;
}

export interface DriverOptions {
  /** Added to (or, with undefined, removed from) the test's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
}

export function runDriver(scenario: string, args: string[] = [], options: DriverOptions = {}): Promise<DriverRun> {
  // The fake helper has no agent mode: these hosts always use a private helper.
  const env: NodeJS.ProcessEnv = { ...process.env, AZURE_KEYVAULT_PKCS11_HELPER: fakeHelperPath, AZURE_KEYVAULT_PKCS11_AGENT: "0" };
  for (const [key, value] of Object.entries(options.env ?? {})) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  const driver = driverPath();
  return new Promise((resolve) => {
    execFile(driver, [modulePath, scenario, ...args], { env, cwd: options.cwd, timeout: 60_000, encoding: "utf8" },
      (error, stdout, stderr) => {
        const values = keyValues(stdout);
        const status = error === null ? 0 : typeof error.code === "number" ? error.code : null;
        resolve({ status, stdout, stderr, values });
      });
  });
}

/** PKCS#11 return values as the driver prints them. */
export const rv = {
  OK: "0x0",
  GENERAL_ERROR: "0x5",
  ARGUMENTS_BAD: "0x7",
  ATTRIBUTE_SENSITIVE: "0x11",
  ATTRIBUTE_TYPE_INVALID: "0x12",
  DEVICE_ERROR: "0x30",
  FUNCTION_NOT_PARALLEL: "0x51",
  FUNCTION_NOT_SUPPORTED: "0x54",
  OPERATION_ACTIVE: "0x90",
  OPERATION_NOT_INITIALIZED: "0x91",
  SESSION_HANDLE_INVALID: "0xb3",
  USER_ALREADY_LOGGED_IN: "0x100",
  BUFFER_TOO_SMALL: "0x150",
  CRYPTOKI_NOT_INITIALIZED: "0x190",
  CRYPTOKI_ALREADY_INITIALIZED: "0x191",
} as const;

export const UNAVAILABLE = "0xffffffffffffffff";

/** Every stdout line is one of the driver's "key value" lines: nothing from the module or the helper. */
export function onlyDriverLines(stdout: string): boolean {
  return stdout.split("\n").every((line) => line === "" || /^[A-Za-z0-9.]+ \S/.test(line));
}
