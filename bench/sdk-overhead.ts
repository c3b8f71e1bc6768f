// The Azure SDK path's own cost, without the shim or the helper: one process alternates a raw keep-alive HTTPS
// sign request and AzureVaultBackend.sign against a running emulator, and prints the median CPU time and latency
// per signature of each. CPU time is the figure to compare on a shared machine.
//
//   node build/cli.cjs emulator --port 0 --keys bench-ec:EC:P-256   # note its READY line
//   AZURE_KEYVAULT_PKCS11_CONFIG=config.json IDENTITY_ENDPOINT=... IDENTITY_HEADER=... NODE_EXTRA_CA_CERTS=ca.pem \
//     node --import tsx bench/sdk-overhead.ts [rounds=12] [signatures per round=300] [warm-up signatures=1500]
// config.json names one slot on the emulator, as bench/run.ts writes it.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";
import { loadConfig } from "../src/config/index.ts";
import { createVaultBackend } from "../src/vault/index.ts";

const rounds = Number(process.argv[2] ?? 12);
const perRound = Number(process.argv[3] ?? 300);
const config = loadConfig();
const slot = config.slots[0];
if (!slot || slot.kind !== "key") throw new Error("the config names no per-key slot");
const backend = createVaultBackend(config);
const key = await backend.getKey(slot.vaultUrl, slot.keyName);
const digest = createHash("sha256").update("sdk-overhead").digest();

const identity = new URL(process.env.IDENTITY_ENDPOINT ?? "");
identity.searchParams.set("resource", "https://vault.azure.net");
identity.searchParams.set("api-version", "2019-08-01");
const tokenResponse = await fetch(identity, { headers: { "X-IDENTITY-HEADER": process.env.IDENTITY_HEADER ?? "" } });
const token = ((await tokenResponse.json()) as { access_token: string }).access_token;
const caFile = process.env.NODE_EXTRA_CA_CERTS;
const agent = new Agent({ keepAlive: true, maxSockets: 1, ...(caFile ? { ca: readFileSync(caFile) } : {}) });
const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
const body = JSON.stringify({ alg: "ES256", value: digest.toString("base64url") });
const signUrl = new URL(`${key.kid}/sign?api-version=7.6`);

function raw(): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(signUrl, { method: "POST", headers, agent }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`raw sign answered ${res.statusCode}`));
      res.resume();
      res.on("end", () => resolve());
    });
    req.setTimeout(30_000, () => req.destroy(new Error("raw sign timed out")));
    req.on("error", reject);
    req.end(body);
  });
}
const sdk = async (): Promise<void> => void (await backend.sign(key, "ES256", digest));

async function measure(run: () => Promise<void>): Promise<{ cpuMs: number; wallMs: number }> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < perRound; i++) await run();
  const used = process.cpuUsage(cpu);
  return { cpuMs: (used.user + used.system) / 1000 / perRound, wallMs: (performance.now() - started) / perRound };
}

// Warm-up: JIT and connections, so that rounds compare steady states. Sixteen chains at once, so that it stays
// short when the emulator adds latency.
const warmup = Number(process.argv[4] ?? 1500);
await Promise.all(
  Array.from({ length: 16 }, async () => {
    for (let i = 0; i < warmup / 16; i++) {
      await raw();
      await sdk();
    }
  }),
);
const results = { raw: [] as Array<{ cpuMs: number; wallMs: number }>, sdk: [] as Array<{ cpuMs: number; wallMs: number }> };
for (let round = 0; round < rounds; round++) {
  results.raw.push(await measure(raw));
  results.sdk.push(await measure(sdk));
}
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[values.length >> 1]!;
const summary = (list: Array<{ cpuMs: number; wallMs: number }>) => ({
  cpuMs: Number(median(list.map((r) => r.cpuMs)).toFixed(3)),
  wallMs: Number(median(list.map((r) => r.wallMs)).toFixed(3)),
});
process.stdout.write(`${JSON.stringify({ raw: summary(results.raw), sdk: summary(results.sdk) })}\n`);
await backend.close();
agent.destroy();
