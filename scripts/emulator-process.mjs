// Starts the built emulator (`build/cli.cjs emulator`) as a child process on a free port and waits for its READY
// line, for the scripts that need a vault: the demo, and the build's code-cache warm-up.
import { spawn } from "node:child_process";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");

/**
 * @param {string[]} args emulator options after `--port 0`, e.g. ["--keys", "k:EC:P-256"]
 * @param {{ stderr?: "inherit" | "ignore" }} [options]
 * @returns {Promise<{ ready: { url: string, identityEndpoint: string, identityHeader: string, caFile: string }, stop: () => void }>}
 */
export async function startEmulatorProcess(args, { stderr = "inherit" } = {}) {
  const child = spawn(process.execPath, [path.join(root, "build", "cli.cjs"), "emulator", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", stderr],
  });
  const stop = () => child.kill("SIGTERM");
  try {
    const ready = await new Promise((resolve, reject) => {
      let buffered = "";
      child.stdout.on("data", (chunk) => {
        buffered += chunk.toString();
        const line = buffered.split("\n").find((l) => l.startsWith("READY "));
        if (line) resolve(JSON.parse(line.slice("READY ".length)));
      });
      child.once("exit", (code) => reject(new Error(`the emulator exited early (${code})`)));
      setTimeout(() => reject(new Error("the emulator did not become ready in 20 s")), 20_000).unref();
    });
    return { ready, stop };
  } catch (error) {
    stop();
    throw error;
  }
}
