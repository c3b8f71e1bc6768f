// The whole module behind a proxy: HTTPS_PROXY in the environment the helper inherits sends the vault's requests
// through CONNECT tunnels, and each signature still verifies against the vault's own JWK.
import { createHash, randomBytes, verify } from "node:crypto";
import test from "ava";
import pkcs11js from "pkcs11js";
import { once } from "node:events";
import { Worker } from "node:worker_threads";
import { signOnce, startModuleFixture, type ModuleFixture } from "./harness.ts";

interface Counts {
  tunnels: string[];
  forwarded: string[];
  refused: number;
}

/** The proxy on a worker thread (proxy-worker.ts); its counts are a message round trip. */
async function proxyWorker(credentials: string): Promise<{ url: string; counts(): Promise<Counts>; close(): Promise<void> }> {
  const entry = new URL("./proxy-worker.ts", import.meta.url).href;
  const bootstrap = `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`;
  const worker = new Worker(bootstrap, { eval: true, workerData: { credentials } });
  const next = async (type: string): Promise<Record<string, unknown>> => {
    for (let skipped = 0; skipped < 100; skipped++) {
      const [message] = (await once(worker, "message")) as [Record<string, unknown>];
      if (message.type === type) return message;
    }
    throw new Error(`the proxy worker never sent '${type}'`);
  };
  const { url } = (await next("ready")) as { url: string };
  return {
    url,
    counts: async () => {
      worker.postMessage({ type: "counts" });
      return (await next("counts")) as unknown as Counts;
    },
    close: async () => {
      worker.postMessage({ type: "close" });
      await next("closed");
      await worker.terminate();
    },
  };
}

let proxy: Awaited<ReturnType<typeof proxyWorker>>;
let fixture: ModuleFixture;

test.before(async () => {
  proxy = await proxyWorker("module:pass word");
  // Before C_Initialize (in the fixture): the helper starts with this environment.
  process.env.HTTPS_PROXY = proxy.url.replace("//", "//module:pass%20word@");
  delete process.env.NO_PROXY;
  delete process.env.no_proxy;
  fixture = await startModuleFixture({ keys: "rsa2048:RSA:2048,p256:EC:P-256" });
});

test.after.always(async () => {
  await fixture?.close();
  delete process.env.HTTPS_PROXY;
  await proxy?.close();
});

test.serial("C_Sign through the proxy: tunnels to the vault, signatures verify with node:crypto against the JWK", async (t) => {
  const vaultHost = new URL(fixture.emulator.url).host;
  for (const [name, mechanism, options] of [
    ["rsa2048", pkcs11js.CKM_SHA256_RSA_PKCS, undefined],
    ["p256", pkcs11js.CKM_ECDSA_SHA256, "ieee-p1363"],
  ] as const) {
    const message = randomBytes(80);
    const signature = signOnce(fixture, name, { mechanism }, message);
    const key = fixture.key(name).publicKey;
    t.true(verify("sha256", message, options ? { key, dsaEncoding: options } : key, signature), `${name} verifies`);
    t.false(verify("sha256", createHash("sha256").update(message).digest(), options ? { key, dsaEncoding: options } : key, signature));
  }
  const counts = await proxy.counts();
  t.true(counts.tunnels.length > 0, "the module reached the vault through the proxy");
  t.deepEqual([...new Set(counts.tunnels)], [vaultHost]);
  t.is(counts.refused, 0, "with the credentials from the URL");
  t.log(`${counts.tunnels.length} tunnels, ${counts.forwarded.length} plain requests (token) forwarded`);
});
