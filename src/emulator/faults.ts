// Injected faults for reliability tests. One seeded PRNG draw per faulted data-plane request decides its fate, so
// the same seed and the same request order give the same sequence of 429s, 503s, dropped connections and stalls.
// With `operations`, only requests of those operations draw (and can be faulted); others are never touched, so
// the sequence seen by the faulted operations does not depend on the rest of the traffic.
import { DATA_PLANE_OPERATIONS } from "./server.ts";

export interface FaultOptions {
  throttleRate?: number;
  unavailableRate?: number;
  dropRate?: number;
  /** Fraction of requests held for stallMs before they are answered normally. */
  stallRate?: number;
  /** How long a stalled request is held (default 5000 ms). */
  stallMs?: number;
  retryAfterSeconds?: number;
  seed?: number;
  /** Operation names (see requestOperation in server.ts) the faults apply to; default all data-plane requests. */
  operations?: string[];
}

export type FaultDecision = "none" | "throttle" | "unavailable" | "drop" | "stall";

/** mulberry32: a small, well-known 32-bit PRNG; statistical quality is ample for picking faults. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultInjector {
  private readonly random: () => number;
  private readonly throttle: number;
  private readonly unavailable: number;
  private readonly drop: number;
  private readonly stall: number;
  private readonly operations: ReadonlySet<string> | undefined;
  readonly retryAfterSeconds: number;
  readonly stallMs: number;
  readonly active: boolean;

  constructor(options: FaultOptions = {}) {
    const rate = (name: string, value: number | undefined): number => {
      const v = value ?? 0;
      if (!Number.isFinite(v) || v < 0 || v > 1) throw new Error(`${name} must be between 0 and 1, got ${value}`);
      return v;
    };
    this.throttle = rate("throttleRate", options.throttleRate);
    this.unavailable = rate("unavailableRate", options.unavailableRate);
    this.drop = rate("dropRate", options.dropRate);
    this.stall = rate("stallRate", options.stallRate);
    if (this.throttle + this.unavailable + this.drop + this.stall > 1) throw new Error("the fault rates add up to more than 1");
    this.retryAfterSeconds = options.retryAfterSeconds ?? 1;
    if (!Number.isInteger(this.retryAfterSeconds) || this.retryAfterSeconds < 0) throw new Error("retryAfterSeconds must be a whole number ≥ 0");
    this.stallMs = options.stallMs ?? 5000;
    if (!Number.isInteger(this.stallMs) || this.stallMs < 0) throw new Error(`stallMs must be a whole number of milliseconds ≥ 0, got ${options.stallMs}`);
    if (options.operations !== undefined) {
      if (!Array.isArray(options.operations)) throw new Error("operations must be a list of operation names");
      const unknown = options.operations.filter((name) => !(DATA_PLANE_OPERATIONS as readonly string[]).includes(name));
      if (unknown.length > 0) throw new Error(`unknown operation(s) ${unknown.map((n) => `'${n}'`).join(", ")}; known: ${DATA_PLANE_OPERATIONS.join(", ")}`);
      this.operations = new Set(options.operations);
    }
    this.random = mulberry32(options.seed ?? Math.floor(Math.random() * 2 ** 32));
    this.active = this.throttle + this.unavailable + this.drop + this.stall > 0;
  }

  /** The fate of one request of `operation` (a name of requestOperation). */
  next(operation: string): FaultDecision {
    if (!this.active || (this.operations && !this.operations.has(operation))) return "none";
    const r = this.random();
    let bound = this.throttle;
    if (r < bound) return "throttle";
    if (r < (bound += this.unavailable)) return "unavailable";
    if (r < (bound += this.drop)) return "drop";
    if (r < (bound += this.stall)) return "stall";
    return "none";
  }
}
