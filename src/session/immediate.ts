// Calls that need nothing remote (an Init, a find, an attribute read, a length query) return their result at once
// instead of a promise, so the helper answers them inside the socket's read callback. After an idle spell every
// microtask hop costs tens of microseconds of cold caches: answering C_SignInit synchronously is measurable in
// the latency of every signature (docs/performance.md).

/** A value now, or a promise of it when the call has to wait (for the vault, or for the session's earlier call). */
export type Immediate<T> = T | Promise<T>;

export function isPromise<T>(value: Immediate<T>): value is Promise<T> {
  return value instanceof Promise;
}

/** Applies `next` at once to a value, or after the promise resolves. */
export function andThen<T, U>(value: Immediate<T>, next: (resolved: T) => Immediate<U>): Immediate<U> {
  return isPromise(value) ? value.then(next) : next(value);
}
