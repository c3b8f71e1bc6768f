// Pieces both benchmarks use (bench/run.ts, bench/agent.ts): the sign driver, an emulator child, raw HTTPS calls to
// it and the floor they measure.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, type JsonWebKey } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { Agent, request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import path from "node:path";
import { promisify } from "node:util";

export const run = promisify(execFile);
export const root = path.resolve(import.meta.dirname, "..");
export const modulePath = path.join(root, "build", "azure-keyvault-pkcs11.so");

export interface Ready {
  url: string;
  identityEndpoint: string;
  identityHeader: string;
  caFile: string;
}

export async function buildDriver(): Promise<string> {
  const out = path.join(root, "build", "bench");
  mkdirSync(out, { recursive: true });
  const binary = path.join(out, "sign-driver");
  const { stdout: cflags } = await run("pkg-config", ["--cflags", "p11-kit-1"]);
  await run("cc", ["-O2", ...cflags.trim().split(/\s+/), path.join(root, "bench", "sign-driver.c"), "-o", binary, "-ldl", "-lpthread"]);
  return binary;
}

/** The emulator as a child process, with the keys bench-ec (EC P-256) and bench-rsa (RSA 2048); `certs` as its --certs. */
export async function startEmulator(latencyMs: number, certs?: string): Promise<{ ready: Ready; child: ChildProcess }> {
  const args = [path.join(root, "build", "cli.cjs"), "emulator", "--port", "0", "--keys", "bench-ec:EC:P-256,bench-rsa:RSA:2048", "--latency-ms", String(latencyMs)];
  if (certs !== undefined) args.push("--certs", certs);
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  const ready = await new Promise<Ready>((resolve, reject) => {
    let buffered = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const line = buffered.split("\n").find((l) => l.startsWith("READY "));
      if (line) resolve(JSON.parse(line.slice(6)) as Ready);
    });
    child.once("exit", (code) => reject(new Error(`emulator exited with ${code}`)));
  });
  return { ready, child };
}

export function call(
  url: string,
  options: { method: string; headers: Record<string, string>; agent?: Agent; ca?: Buffer },
  body?: string,
): Promise<{ status: number; body: string }> {
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(target, options, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout: ${options.method} ${url}`)));
    req.on("error", reject);
    req.end(body);
  });
}

export async function getToken(ready: Ready): Promise<string> {
  const url = new URL(ready.identityEndpoint);
  url.searchParams.set("resource", "https://vault.azure.net");
  url.searchParams.set("api-version", "2019-08-01");
  const res = await call(url.toString(), { method: "GET", headers: { "X-IDENTITY-HEADER": ready.identityHeader } });
  if (res.status !== 200) throw new Error(`token endpoint answered ${res.status}`);
  return (JSON.parse(res.body) as { access_token: string }).access_token;
}

/**
 * The floor: sequential raw sign requests over one keep-alive connection, after warmupSeconds of 16 parallel ones.
 * Returns the mean latency in ms.
 */
export async function measureFloor(ready: Ready, token: string, keyName: string, durationSeconds: number, warmupSeconds: number): Promise<number> {
  const ca = readFileSync(ready.caFile);
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca });
  const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  const key = await call(`${ready.url}/keys/${keyName}?api-version=7.6`, { method: "GET", headers, agent });
  const kid = (JSON.parse(key.body) as { key: { kid: string } }).key.kid;
  const body = JSON.stringify({ alg: "ES256", value: createHash("sha256").update("floor").digest("base64url") });
  const signOnce = async (through: Agent): Promise<void> => {
    const res = await call(`${kid}/sign?api-version=7.6`, { method: "POST", headers, agent: through }, body);
    if (res.status !== 200) throw new Error(`floor sign answered ${res.status}: ${res.body}`);
  };
  const warmupAgent = new Agent({ keepAlive: true, maxSockets: 16, ca });
  const warmupEnd = performance.now() + warmupSeconds * 1000;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (performance.now() < warmupEnd) await signOnce(warmupAgent);
    }),
  );
  warmupAgent.destroy();
  await signOnce(agent);
  let count = 0;
  const start = performance.now();
  const end = start + durationSeconds * 1000;
  while (performance.now() < end) {
    await signOnce(agent);
    count++;
  }
  agent.destroy();
  return (performance.now() - start) / count;
}

export async function jwkOf(ready: Ready, token: string, keyName: string): Promise<JsonWebKey> {
  const ca = readFileSync(ready.caFile);
  const res = await call(`${ready.url}/keys/${keyName}?api-version=7.6`, { method: "GET", headers: { Authorization: `Bearer ${token}` }, ca });
  return (JSON.parse(res.body) as { key: JsonWebKey }).key;
}

/** The vault's certificate for a key (PEM), read from the emulator's REST API, not through the module. */
export async function certificatePemOf(ready: Ready, token: string, name: string): Promise<string> {
  const ca = readFileSync(ready.caFile);
  const res = await call(`${ready.url}/certificates/${name}?api-version=7.6`, { method: "GET", headers: { Authorization: `Bearer ${token}` }, ca });
  if (res.status !== 200) throw new Error(`get certificate ${name} answered ${res.status}: ${res.body}`);
  const der = (JSON.parse(res.body) as { cer: string }).cer;
  return `-----BEGIN CERTIFICATE-----\n${der.match(/.{1,64}/g)!.join("\n")}\n-----END CERTIFICATE-----\n`;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** The nearest-rank percentile (p in 0..100). */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
