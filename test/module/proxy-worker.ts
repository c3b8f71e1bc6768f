// Runs the test proxy (test/vault/connect-proxy.ts) on its own thread, for the same reason as emulator-worker.ts:
// synchronous pkcs11js calls block the main thread, whose event loop would then never relay a byte.
import { parentPort, workerData } from "node:worker_threads";
import { connectProxy } from "../vault/connect-proxy.ts";

const proxy = await connectProxy((workerData as { credentials?: string }).credentials);
parentPort!.postMessage({ type: "ready", url: proxy.url });
parentPort!.on("message", (message: { type: string }) => {
  if (message.type === "counts") parentPort!.postMessage({ type: "counts", tunnels: proxy.tunnels, forwarded: proxy.forwarded, refused: proxy.refused });
  if (message.type === "close") void proxy.close().then(() => parentPort!.postMessage({ type: "closed" }));
});
