// Injected faults for reliability tests. One seeded PRNG draw per data-plane request decides its fate, so the same
// seed and the same request order give the same sequence of 429s, 503s and dropped connections.

export interface FaultOptions {
  throttleRate?: number;
  unavailableRate?: number;
  dropRate?: number;
  retryAfterSeconds?: number;
  seed?: number;
}

export type FaultDecision = "none" | "throttle" | "unavailable" | "drop";

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
  readonly retryAfterSeconds: number;
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
    if (this.throttle + this.unavailable + this.drop > 1) throw new Error("the fault rates add up to more than 1");
    this.retryAfterSeconds = options.retryAfterSeconds ?? 1;
    if (!Number.isInteger(this.retryAfterSeconds) || this.retryAfterSeconds < 0) throw new Error("retryAfterSeconds must be a whole number ≥ 0");
    this.random = mulberry32(options.seed ?? Math.floor(Math.random() * 2 ** 32));
    this.active = this.throttle + this.unavailable + this.drop > 0;
  }

  next(): FaultDecision {
    if (!this.active) return "none";
    const r = this.random();
    if (r < this.throttle) return "throttle";
    if (r < this.throttle + this.unavailable) return "unavailable";
    if (r < this.throttle + this.unavailable + this.drop) return "drop";
    return "none";
  }
}
