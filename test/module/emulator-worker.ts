// Runs the emulator on its own thread. pkcs11js calls are synchronous and block the test's main thread while the
// module's helper talks to the vault, so an emulator on the main thread's event loop would never answer.
import { parentPort, workerData } from "node:worker_threads";
import { startEmulator, type EmulatorOptions, type FaultOptions } from "../../src/emulator/index.ts";

const emulator = await startEmulator(workerData as EmulatorOptions);
const { url, identityEndpoint, identityHeader, caFile, caPem, tenantId } = emulator;
parentPort!.postMessage({ type: "ready", info: { url, identityEndpoint, identityHeader, caFile, caPem, tenantId } });
parentPort!.on("message", (message: { type: string; id: number; spec?: string; certificate?: boolean; name?: string; version?: string; faults?: FaultOptions; deny?: string[] }) => {
  const reply = (error?: unknown, value?: unknown) => parentPort!.postMessage({ type: "done", id: message.id, error: error ? String(error) : undefined, value });
  if (message.type === "addKey") emulator.addKey(message.spec!, { certificate: message.certificate }).then(() => reply(), reply);
  if (message.type === "setFaults") {
    try {
      emulator.setFaults(message.faults);
      reply();
    } catch (error) {
      reply(error);
    }
  }
  if (message.type === "setPermissions" || message.type === "octKeyBytes") {
    try {
      if (message.type === "setPermissions") reply(undefined, emulator.setPermissions(message.deny));
      else reply(undefined, emulator.octKeyBytes(message.name!, message.version));
    } catch (error) {
      reply(error);
    }
  }
  if (message.type === "requestCounts") reply(undefined, emulator.requestCounts(message.name));
  if (message.type === "tokensIssued") reply(undefined, emulator.tokensIssued());
  if (message.type === "close") emulator.close().then(() => reply(), reply);
});
