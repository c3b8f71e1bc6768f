// Background retries of a token's vault fetches after a passing failure (throttling, a reset, a timeout, a 5xx):
// 1 s doubling to 60 s, on unref'd timers so that a pending retry never keeps the helper alive.
import { VaultError } from "../vault/types.ts";

export const RETRY_FIRST_MS = 1_000;
export const RETRY_MAX_MS = 60_000;

/**
 * Whether a failed key fetch may succeed by itself later. A missing key (404), a refusal (403) and a request the
 * vault calls bad (400) will not, and neither will a key this module cannot use (not a VaultError).
 */
export function isPassing(error: unknown): boolean {
  return error instanceof VaultError && error.kind !== "not-found" && error.kind !== "forbidden" && error.kind !== "bad-parameter";
}

/** One scheduled retry at a time, its delay doubling with each consecutive failure. */
export class Backoff {
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;

  /** Consecutive failures since the last success. */
  get failureCount(): number {
    return this.failures;
  }

  /** Counts a failure and schedules `retry` after the next delay, replacing a scheduled one; returns the delay. */
  failed(retry: () => void): number {
    this.failures++;
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(this.failures - 1, 16));
    this.cancel();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      retry();
    }, delay);
    this.timer.unref();
    return delay;
  }

  /** After a success, or a failure that no retry would mend. */
  reset(): void {
    this.failures = 0;
    this.cancel();
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
