// The shared agent (docs/agent contract, issue #8) against private helpers, in one run, at 0 ms and 20 ms of vault
// latency. Called by bench/run.ts (`BENCH_ONLY=agent npm run bench` runs only this part). For each latency:
//   - the floor: one keep-alive HTTPS sign request after another, straight to the emulator (common.ts);
//   - cold one-shot `pkcs11-tool --sign` and `pkcs11-tool -L`, a fresh process each, agent and private runs
//     alternating (agent first in even pairs, private first in odd ones) so that the machine's load hits both;
//     the agent is started (and its context warmed) by one run before, which is reported as agentStartMs; after each
//     -L pair, `pkcs11-tool -L` through an in-process module shows what the client costs on its own;
//   - one warm call that needs nothing remote (C_GetSessionInfo, bench/sign-driver.c round-trip), each way;
//   - a batch of `osslsigncode sign` runs (one process per file, through the libp11 engine), in alternating
//     blocks of 10 files, and the total of each way's wall times;
//   - memory: CLIENTS concurrent C hosts (bench/sign-driver.c with SIGN_DRIVER_HOLD=1: initialize, sign, keep the
//     session open) through the agent, and the agent process's VmRSS (its worker threads share that address
//     space), against the VmRSS of the private helpers the same hosts get with AZURE_KEYVAULT_PKCS11_AGENT=0.
// Agent runs get AZURE_KEYVAULT_PKCS11_AGENT=1 and a private XDG_RUNTIME_DIR; private runs get
// AZURE_KEYVAULT_PKCS11_AGENT=0. Every pkcs11-tool signature is verified with node:crypto against the vault's JWK,
// the first and last osslsigncode output of each way with `osslsigncode verify` and the vault's certificate. A
// "cannot use the agent" line from an agent run, a line in agent.log other than its start, or a changed agent pid
// is counted and reported: those figures would then not describe the agent.
// Targets (reported, never asserted): (1) a one-shot signature through a warm agent within one vault round trip
// (the floor) + 10 ms; (2) the batch at 20 ms in at most 0.3x the time with private helpers; (3) the agent serving
// CLIENTS hosts uses at most 1.2x the RSS of one private helper.
import { spawn } from "node:child_process";
import { createHash, createPublicKey, verify } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { certificatePemOf, getToken, jwkOf, measureFloor, median, modulePath, percentile, root, run, startEmulator } from "./common.ts";

/** Pairs of one-shot runs (agent + private) per command and latency. */
const RUNS = Number(process.env.BENCH_AGENT_RUNS ?? 20);
/** Files signed by osslsigncode each way. */
const BATCH = Number(process.env.BENCH_AGENT_BATCH ?? 100);
const BLOCK = 10;
/** Concurrent hosts for the memory figure. */
const CLIENTS = Number(process.env.BENCH_AGENT_CLIENTS ?? 8);
const FLOOR_SECONDS = Number(process.env.BENCH_AGENT_FLOOR_SECONDS ?? 3);
const LATENCIES = (process.env.BENCH_AGENT_LATENCIES ?? "0,20").split(",").map(Number);

const libp11Engine = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";
/**
 * An in-process module with one token (p11-kit's trust store): `pkcs11-tool -L` through it is what the client costs
 * on its own (start, dynamic linking, OpenSSL), and an upper bound of it as it also parses the CA bundle.
 */
const inProcessModule = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-trust.so";
/** A real PE (the one test/clients/osslsigncode.test.ts signs), 1 MB: hashing it is part of each run, both ways. */
const unsignedPe = "/usr/lib/shim/shimx64.efi";
const keyUri = "pkcs11:token=bench-ec;object=bench-ec;type=private";
const fallbackLine = "cannot use the agent";

interface Timed {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end with a deadline; ms is the wall time from spawn to exit, as a shell would see it. */
function timed(file: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(file, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let ms = 0;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.once("exit", () => (ms = performance.now() - start));
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ ms, code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

function vmRssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]);
}

function threadsOf(pid: number): number {
  return Number(/^Threads:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
}

/** Child processes of pid, from /proc/<n>/stat. */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const fixed = (value: number, digits = 1): number => Number(value.toFixed(digits));
const stats = (runs: number[]): { medianMs: number; p90Ms: number; runsMs: number[] } => ({
  medianMs: fixed(median(runs)),
  p90Ms: fixed(percentile(runs, 90)),
  runsMs: runs.map((v) => fixed(v)),
});

interface Way {
  name: "agent" | "private";
  env: NodeJS.ProcessEnv;
}

/** What an agent run must not show; collected rather than thrown so that the report can say exactly what happened. */
class Anomalies {
  readonly lines: string[] = [];
  fallbacks = 0;
  check(way: Way, what: string, result: Timed): void {
    if (result.code !== 0) throw new Error(`${what} (${way.name}) exited with ${result.code}:\n${result.stderr}`);
    if (way.name === "agent" && result.stderr.includes(fallbackLine)) {
      this.fallbacks++;
      if (this.lines.length < 10) this.lines.push(`${what}: ${result.stderr.trim().split("\n").find((l) => l.includes(fallbackLine))}`);
    }
  }
}

async function benchAgentAtLatency(binary: string, latencyMs: number): Promise<Record<string, unknown>> {
  const { ready, child: emulator } = await startEmulator(latencyMs, "bench-ec:codeSigning");
  const dir = mkdtempSync(path.join(tmpdir(), "akv-bench-agent-"));
  const runtimeDir = path.join(dir, "run");
  const agentDir = path.join(runtimeDir, "azure-keyvault-pkcs11");
  mkdirSync(runtimeDir, { mode: 0o700 });
  mkdirSync(path.join(dir, "home"));
  try {
    const config = path.join(dir, "config.json");
    writeFileSync(config, JSON.stringify({ slots: [{ label: "bench-ec", key_name: "bench-ec", vault_url: ready.url }] }));
    // The same small environment both ways (as test/clients/harness.ts gives clients), apart from the agent switch.
    const base: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
      HOME: path.join(dir, "home"),
      LC_ALL: "C",
      AZURE_KEYVAULT_PKCS11_CONFIG: config,
      IDENTITY_ENDPOINT: ready.identityEndpoint,
      IDENTITY_HEADER: ready.identityHeader,
      NODE_EXTRA_CA_CERTS: ready.caFile,
    };
    const agent: Way = { name: "agent", env: { ...base, AZURE_KEYVAULT_PKCS11_AGENT: "1", XDG_RUNTIME_DIR: runtimeDir } };
    const priv: Way = { name: "private", env: { ...base, AZURE_KEYVAULT_PKCS11_AGENT: "0" } };
    const anomalies = new Anomalies();

    const token = await getToken(ready);
    const publicKey = createPublicKey({ key: await jwkOf(ready, token, "bench-ec"), format: "jwk" });
    const certificate = path.join(dir, "bench-ec.crt.pem");
    writeFileSync(certificate, await certificatePemOf(ready, token, "bench-ec"));
    const message = Buffer.from("azure-keyvault-pkcs11 agent benchmark");
    const digestFile = path.join(dir, "digest.bin");
    writeFileSync(digestFile, createHash("sha256").update(message).digest());

    let signatures = 0;
    const signOnce = async (way: Way): Promise<number> => {
      const sig = path.join(dir, `${way.name}.sig`);
      rmSync(sig, { force: true });
      const args = ["--module", modulePath, "--sign", "-m", "ECDSA", "--label", "bench-ec", "-i", digestFile, "-o", sig];
      const result = await timed("pkcs11-tool", args, way.env, dir);
      anomalies.check(way, "pkcs11-tool --sign", result);
      if (!verify("sha256", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, readFileSync(sig))) {
        throw new Error(`pkcs11-tool --sign (${way.name}): the signature does not verify against the vault's public key`);
      }
      signatures++;
      return result.ms;
    };
    const listOnce = async (way: Way): Promise<number> => {
      const result = await timed("pkcs11-tool", ["--module", modulePath, "-L"], way.env, dir);
      anomalies.check(way, "pkcs11-tool -L", result);
      if (!/token label\s*:\s*bench-ec/.test(result.stdout)) {
        throw new Error(`pkcs11-tool -L (${way.name}) shows no bench-ec token:\n${result.stdout}`);
      }
      return result.ms;
    };
    const listInProcess = async (): Promise<number> => {
      const result = await timed("pkcs11-tool", ["--module", inProcessModule, "-L"], base, dir);
      if (result.code !== 0) throw new Error(`pkcs11-tool -L with ${inProcessModule} exited with ${result.code}:\n${result.stderr}`);
      return result.ms;
    };
    /** RUNS pairs, alternating which way goes first; `also` runs after each pair. */
    const alternate = async (once: (way: Way) => Promise<number>, also?: () => Promise<number>) => {
      const runs = { agent: [] as number[], private: [] as number[], also: [] as number[] };
      for (let i = 0; i < RUNS; i++) {
        for (const way of i % 2 === 0 ? [agent, priv] : [priv, agent]) runs[way.name].push(await once(way));
        if (also) runs.also.push(await also());
      }
      return runs;
    };

    // The harness's own cost per run: spawning a program that does nothing.
    const spawnRuns: number[] = [];
    for (let i = 0; i < RUNS; i++) spawnRuns.push((await timed("/bin/true", [], base, dir)).ms);

    // Start the agent (the first agent run launches it and fills its context's caches), and warm the page cache
    // for the private path the same way.
    const agentStartMs = await signOnce(agent);
    await signOnce(priv);
    if (!existsSync(path.join(agentDir, "agent.pid"))) {
      throw new Error(`the first agent run started no agent (${anomalies.fallbacks} fallbacks): ${anomalies.lines.join("; ")}`);
    }
    const agentPid = Number(readFileSync(path.join(agentDir, "agent.pid"), "utf8").trim());

    const floorMs = await measureFloor(ready, token, "bench-ec", FLOOR_SECONDS, 1);
    const sign = await alternate(signOnce);
    const list = await alternate(listOnce, existsSync(inProcessModule) ? listInProcess : undefined);

    // The batch: BATCH files each way, in alternating blocks of BLOCK.
    const batchMs = { agent: 0, private: 0 };
    const signed = { agent: 0, private: 0 };
    for (let block = 0; block * BLOCK < BATCH; block++) {
      for (const way of block % 2 === 0 ? [agent, priv] : [priv, agent]) {
        for (let i = block * BLOCK; i < Math.min(BATCH, (block + 1) * BLOCK); i++) {
          const out = path.join(dir, `${way.name}-${i}.efi`);
          const result = await timed(
            "osslsigncode",
            ["sign", "-pkcs11engine", libp11Engine, "-pkcs11module", modulePath, "-certs", certificate, "-key", keyUri,
              "-h", "sha256", "-in", unsignedPe, "-out", out],
            way.env,
            dir,
          );
          anomalies.check(way, "osslsigncode sign", result);
          if (!/Succeeded/.test(result.stdout)) throw new Error(`osslsigncode sign (${way.name}) did not succeed:\n${result.stdout}${result.stderr}`);
          batchMs[way.name] += result.ms;
          signed[way.name]++;
          if (i === 0 || i === BATCH - 1) {
            const check = await timed("osslsigncode", ["verify", "-in", out, "-CAfile", certificate], base, dir);
            if (check.code !== 0 || !/Signature verification: ok/.test(check.stdout)) {
              throw new Error(`osslsigncode verify of ${out} (${way.name}) failed:\n${check.stdout}${check.stderr}`);
            }
          }
          rmSync(out, { force: true });
        }
      }
    }

    const memory = await measureMemory(binary, agent, priv, agentPid, anomalies, dir);

    // One warm call with nothing remote (C_GetSessionInfo), for 1 s per run: the agent's extra hop through its main
    // thread shows here, with nothing else around it. After the memory figures, as tens of thousands of calls a
    // second grow the agent's heap; its RSS afterwards is reported on its own.
    const roundTrip = { agent: [] as number[], private: [] as number[] };
    for (let i = 0; i < 3; i++) {
      for (const way of i % 2 === 0 ? [agent, priv] : [priv, agent]) {
        const argv = [modulePath, "bench-ec", "round-trip", "1", "1", createHash("sha256").update("round trip").digest("hex")];
        const { stdout, stderr } = await run(binary, argv, { env: way.env, cwd: dir, timeout: 60_000 });
        anomalies.check(way, "sign-driver round-trip", { ms: 0, code: 0, stdout, stderr });
        roundTrip[way.name].push((JSON.parse(stdout) as { meanLatencyMs: number }).meanLatencyMs);
      }
    }
    const agentRssAfterCallsKiB = vmRssKiB(agentPid);

    const agentPidAfter = Number(readFileSync(path.join(agentDir, "agent.pid"), "utf8").trim());
    const agentLog = readFileSync(path.join(agentDir, "agent.log"), "utf8").trim().split("\n").filter((l) => l.length > 0);
    const unexpectedLog = agentLog.filter((l) => !/^AZURE_KEYVAULT: agent \d+ listening on /.test(l));

    const signAgent = median(sign.agent);
    return {
      latencyMs,
      floorMs: fixed(floorMs, 3),
      spawnTrueMs: fixed(median(spawnRuns), 2),
      agentStartMs: fixed(agentStartMs),
      sign: { agent: stats(sign.agent), private: stats(sign.private) },
      list: { agent: stats(list.agent), private: stats(list.private), ...(list.also.length > 0 ? { inProcessModule: stats(list.also) } : {}) },
      callRoundTripMs: { agent: fixed(median(roundTrip.agent), 4), private: fixed(median(roundTrip.private), 4) },
      agentRssAfterCallsKiB,
      batch: {
        files: signed,
        agentTotalS: fixed(batchMs.agent / 1000, 2),
        privateTotalS: fixed(batchMs.private / 1000, 2),
        agentPerFileMs: fixed(batchMs.agent / Math.max(1, signed.agent)),
        privatePerFileMs: fixed(batchMs.private / Math.max(1, signed.private)),
        ratio: fixed(batchMs.agent / batchMs.private, 3),
      },
      memory,
      targets: {
        // (1) <= 0: met. The p90 margin says how often it holds.
        oneShotMarginMs: fixed(signAgent - (floorMs + 10)),
        oneShotP90MarginMs: fixed(percentile(sign.agent, 90) - (floorMs + 10)),
        // (2) <= 0.3: met (judged at 20 ms).
        batchRatio: fixed(batchMs.agent / batchMs.private, 3),
        // (3) <= 1.2: met.
        memoryRatio: memory.ratio,
      },
      checks: {
        verifiedSignatures: signatures,
        agentFallbacks: anomalies.fallbacks,
        fallbackLines: anomalies.lines,
        agentRestarted: agentPidAfter !== agentPid || !alive(agentPid),
        unexpectedAgentLog: unexpectedLog.slice(0, 10),
      },
    };
  } finally {
    await stopAgent(agentDir);
    emulator.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}

/** CLIENTS hosts that stay, through the agent, then CLIENTS through private helpers; VmRSS read while all hold a session. */
async function measureMemory(binary: string, agent: Way, priv: Way, agentPid: number, anomalies: Anomalies, dir: string) {
  const digestHex = createHash("sha256").update("memory").digest("hex");
  const agentIdleKiB = vmRssKiB(agentPid);
  const hold = async <T>(way: Way, count: number, measure: (hosts: number[]) => T | Promise<T>): Promise<T> => {
    const hosts = Array.from({ length: count }, () =>
      spawn(binary, [modulePath, "bench-ec", "ecdsa", "0", "0", digestHex], {
        env: { ...way.env, SIGN_DRIVER_HOLD: "1" },
        cwd: dir,
        stdio: ["pipe", "pipe", "pipe"],
      }),
    );
    try {
      await Promise.all(
        hosts.map(
          (host) =>
            new Promise<void>((resolve, reject) => {
              let out = "";
              let err = "";
              const timer = setTimeout(() => reject(new Error(`a ${way.name} host did not sign within 60 s:\n${err}`)), 60_000);
              host.stderr!.on("data", (c: Buffer) => (err += c.toString()));
              host.stdout!.on("data", (c: Buffer) => {
                out += c.toString();
                if (out.includes("\n")) {
                  clearTimeout(timer);
                  // Fallback lines are written at C_Initialize, before the driver prints its figures.
                  anomalies.check(way, "held host", { ms: 0, code: 0, stdout: out, stderr: err });
                  resolve();
                }
              });
              host.once("exit", (code) => {
                clearTimeout(timer);
                reject(new Error(`a ${way.name} host exited with ${code} before it signed:\n${err}`));
              });
            }),
        ),
      );
      return await measure(hosts.map((h) => h.pid!));
    } finally {
      await Promise.all(
        hosts.map(async (host) => {
          host.stdin!.end();
          if (host.exitCode === null) await new Promise((resolve) => host.once("exit", resolve));
        }),
      );
    }
  };
  // A second context (any different AZURE_* value makes one), while the CLIENTS hosts hold theirs: what one more
  // distinct environment costs the agent.
  const otherContext: Way = { name: "agent", env: { ...agent.env, AZURE_BENCH_CONTEXT: "second" } };
  const withAgent = await hold(agent, CLIENTS, async (hosts) => {
    const rssKiB = vmRssKiB(agentPid);
    const threads = threadsOf(agentPid);
    // A host with its own helper would show it as a child; through the agent there must be none.
    const hostsWithAChild = hosts.filter((pid) => childrenOf(pid).length > 0).length;
    const twoContexts = await hold(otherContext, 1, () => ({ rssKiB: vmRssKiB(agentPid), threads: threadsOf(agentPid) }));
    return { rssKiB, threads, hostsWithAChild, twoContexts };
  });
  const helpers = await hold(priv, CLIENTS, (hosts) => hosts.flatMap(childrenOf).map(vmRssKiB));
  if (helpers.length !== CLIENTS) throw new Error(`expected ${CLIENTS} private helpers, found ${helpers.length}`);
  const oneHelperKiB = median(helpers);
  return {
    clients: CLIENTS,
    agentIdleRssKiB: agentIdleKiB,
    agentRssKiB: withAgent.rssKiB,
    agentThreads: withAgent.threads,
    agentHostsWithOwnHelper: withAgent.hostsWithAChild,
    agentTwoContextsRssKiB: withAgent.twoContexts.rssKiB,
    agentTwoContextsThreads: withAgent.twoContexts.threads,
    privateHelperRssKiB: oneHelperKiB,
    privateHelpersTotalKiB: helpers.reduce((a, b) => a + b, 0),
    ratio: fixed(withAgent.rssKiB / oneHelperKiB, 3),
  };
}

/** SIGTERM to the agent of this run (agent.pid), then a bounded wait for it to exit. */
async function stopAgent(agentDir: string): Promise<void> {
  const pidFile = path.join(agentDir, "agent.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return;
  process.kill(pid, "SIGTERM");
  for (let i = 0; i < 200 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 25));
}

export async function benchAgent(binary: string): Promise<Array<Record<string, unknown>>> {
  if (!existsSync(unsignedPe)) throw new Error(`${unsignedPe} is missing (Debian package shim-unsigned)`);
  const results = [];
  for (const latency of LATENCIES) {
    const result = await benchAgentAtLatency(binary, latency);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    results.push(result);
  }
  const out = path.join(root, "build", "bench", "agent.json");
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`(also written to ${path.relative(root, out)})\n`);
  return results;
}

/** A compact table of the agent figures and the three targets. */
export function printAgentSummary(results: Array<Record<string, unknown>>): void {
  type Result = {
    latencyMs: number;
    floorMs: number;
    spawnTrueMs: number;
    agentStartMs: number;
    sign: Record<"agent" | "private", { medianMs: number; p90Ms: number }>;
    list: Record<"agent" | "private", { medianMs: number; p90Ms: number }> & { inProcessModule?: { medianMs: number; p90Ms: number } };
    callRoundTripMs: Record<"agent" | "private", number>;
    agentRssAfterCallsKiB: number;
    batch: { files: Record<string, number>; agentTotalS: number; privateTotalS: number; ratio: number };
    memory: { clients: number; agentRssKiB: number; agentIdleRssKiB: number; agentThreads: number; agentTwoContextsRssKiB: number; agentTwoContextsThreads: number; privateHelperRssKiB: number; privateHelpersTotalKiB: number; ratio: number };
    targets: { oneShotMarginMs: number; oneShotP90MarginMs: number; batchRatio: number; memoryRatio: number };
    checks: { verifiedSignatures: number; agentFallbacks: number; agentRestarted: boolean; unexpectedAgentLog: string[] };
  };
  const rs = results as unknown as Result[];
  const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
  const rows: Array<[string, (r: Result) => string, (r: Result) => string]> = [
    ["pkcs11-tool --sign, median / p90", (r) => `${r.sign.agent.medianMs} / ${r.sign.agent.p90Ms} ms`, (r) => `${r.sign.private.medianMs} / ${r.sign.private.p90Ms} ms`],
    ["pkcs11-tool -L, median / p90", (r) => `${r.list.agent.medianMs} / ${r.list.agent.p90Ms} ms`, (r) => `${r.list.private.medianMs} / ${r.list.private.p90Ms} ms`],
    ["one warm call (C_GetSessionInfo)", (r) => `${r.callRoundTripMs.agent} ms`, (r) => `${r.callRoundTripMs.private} ms`],
    [`osslsigncode sign x${rs[0]?.batch.files["agent"]}, total`, (r) => `${r.batch.agentTotalS} s`, (r) => `${r.batch.privateTotalS} s`],
    [`RSS with ${rs[0]?.memory.clients} hosts holding a session`, (r) => `${mib(r.memory.agentRssKiB)} (1 process, ${r.memory.agentThreads} threads)`, (r) => `${mib(r.memory.privateHelperRssKiB)} each, ${mib(r.memory.privateHelpersTotalKiB)} total`],
  ];
  const header = ["", ...rs.flatMap((r) => [`${r.latencyMs} ms: agent`, `${r.latencyMs} ms: private`])];
  const lines = [header, ...rows.map(([label, a, p]) => [label, ...rs.flatMap((r) => [a(r), p(r)])])];
  lines.push([`RSS, + 1 host in a second context`, ...rs.flatMap((r) => [`${mib(r.memory.agentTwoContextsRssKiB)} (${r.memory.agentTwoContextsThreads} threads)`, ""])]);
  lines.push(["RSS after the 1 s call runs", ...rs.flatMap((r) => [mib(r.agentRssAfterCallsKiB), ""])]);
  lines.push(["vault round trip (floor)", ...rs.flatMap((r) => [`${r.floorMs} ms`, ""])]);
  lines.push(["agent start (first run)", ...rs.flatMap((r) => [`${r.agentStartMs} ms`, ""])]);
  lines.push(["spawn of /bin/true", ...rs.flatMap((r) => [`${r.spawnTrueMs} ms`, ""])]);
  lines.push(["pkcs11-tool -L, in-process p11-kit-trust", ...rs.flatMap((r) => [r.list.inProcessModule ? `${r.list.inProcessModule.medianMs} / ${r.list.inProcessModule.p90Ms} ms` : "n/a", ""])]);
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  process.stdout.write(`\nshared agent vs private helpers\n${lines.map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join(" | ")).join("\n")}\n`);
  for (const r of rs) {
    const t = r.targets;
    process.stdout.write(
      `${r.latencyMs} ms: (1) one-shot sign - (floor + 10 ms) = ${t.oneShotMarginMs} ms median, ${t.oneShotP90MarginMs} ms p90 (target <= 0); ` +
        `(2) batch agent/private = ${t.batchRatio} (target <= 0.3 at 20 ms); (3) agent RSS / one helper = ${t.memoryRatio} (target <= 1.2); ` +
        `checks: ${r.checks.verifiedSignatures} signatures verified, ${r.checks.agentFallbacks} fallbacks, ` +
        `agent ${r.checks.agentRestarted ? "RESTARTED" : "kept its pid"}, ${r.checks.unexpectedAgentLog.length} unexpected agent.log lines\n`,
    );
  }
}
