import { rvName } from "./constants.ts";

/**
 * A PKCS#11 return value thrown from anywhere below a handler. The dispatcher turns it into the reply's rv;
 * `message` is for logs only and says why, in terms a user can act on.
 */
export class Pkcs11Error extends Error {
  /** True when whoever threw it has written its log line already (src/token/vault-errors.ts). */
  readonly logged: boolean;

  constructor(
    readonly rv: number,
    message?: string,
    options: { logged?: boolean } = {},
  ) {
    super(message ?? rvName(rv));
    this.name = "Pkcs11Error";
    this.logged = options.logged ?? false;
  }
}

/** Throws `rv` unless `condition` holds. */
export function ensure(condition: unknown, rv: number, message?: string): asserts condition {
  if (!condition) throw new Pkcs11Error(rv, message);
}
