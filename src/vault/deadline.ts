// Deadlines for remote calls, and the one place the SDK's retry policy learns about them. The SDK waits whatever
// Retry-After a 429/503 asks for; when that wait would outlast the call's deadline, waiting only turns a clear
// "throttled" into a vague "timeout" much later. This per-try policy removes such a Retry-After, so the throttling
// strategy steps aside: a 429 is returned as it is (VaultError "throttled" at once) and a 503 gets the short
// exponential back-off, still bounded by the deadline.
import type { PipelinePolicy } from "@azure/core-rest-pipeline";
import { log } from "../log/log.ts";

const RETRY_AFTER_HEADERS = ["retry-after-ms", "x-ms-retry-after-ms", "retry-after"];

/** When each deadline signal fires, in ms since the epoch. Keyed by the signal the SDK hands to the pipeline. */
const deadlines = new WeakMap<object, number>();

export interface Deadline {
  /** Aborts (with a TimeoutError reason) when the deadline passes. */
  signal: AbortSignal;
  /** Stops the timer once the call is over. */
  dispose(): void;
}

/**
 * A deadline whose timer is cleared when the call ends. AbortSignal.timeout cannot be cancelled: at hundreds of
 * signatures a second its 60 s timers piled up by the ten thousand, and the timer list and GC paid for them.
 */
export function startDeadline(timeoutMs: number): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException(`the deadline of ${timeoutMs} ms passed`, "TimeoutError")), timeoutMs);
  timer.unref();
  deadlines.set(controller.signal, Date.now() + timeoutMs);
  return { signal: controller.signal, dispose: () => clearTimeout(timer) };
}

/** Milliseconds a response asks the client to wait, or undefined when it does not ask. */
export function retryAfterMs(headers: { get(name: string): string | undefined }, now = Date.now()): number | undefined {
  for (const name of RETRY_AFTER_HEADERS) {
    const raw = headers.get(name);
    if (raw === undefined || raw.trim() === "") continue;
    const value = Number(raw);
    if (Number.isFinite(value)) return name === "retry-after" ? value * 1000 : value;
    if (name === "retry-after") {
      const date = Date.parse(raw);
      if (Number.isFinite(date)) return Math.max(0, date - now);
    }
  }
  return undefined;
}

export const deadlineAwareRetryAfterPolicy: PipelinePolicy = {
  name: "deadlineAwareRetryAfterPolicy",
  async sendRequest(request, next) {
    const response = await next(request);
    if (response.status !== 429 && response.status !== 503) return response;
    const deadline = request.abortSignal ? deadlines.get(request.abortSignal) : undefined;
    if (deadline === undefined) return response;
    const wait = retryAfterMs(response.headers);
    const remaining = deadline - Date.now();
    if (wait !== undefined && wait >= remaining) {
      log.debug(`${response.status}: Retry-After ${wait} ms is past the deadline (${Math.max(0, remaining)} ms left); not waiting`);
      for (const name of RETRY_AFTER_HEADERS) response.headers.delete(name);
      response.headers.set("x-akv-pkcs11-retry-after-dropped", String(wait));
    }
    return response;
  },
};
