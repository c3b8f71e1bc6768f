// One line per check: what was checked, the verdict, what was found and, when it is not ok, how to fix it.
// `--json` prints the same records as an array; the exit status is 1 when any check failed (warnings pass).

export type Verdict = "ok" | "warn" | "FAIL";

export interface CheckResult {
  check: string;
  /** The token label of the slot the check is about, when it is about one. */
  slot?: string;
  verdict: Verdict;
  detail: string;
  fix?: string;
}

export class Report {
  readonly results: CheckResult[] = [];

  constructor(private readonly onResult?: (result: CheckResult) => void) {}

  add(result: CheckResult): CheckResult {
    this.results.push(result);
    this.onResult?.(result);
    return result;
  }

  ok(check: string, detail: string, slot?: string): CheckResult {
    return this.add({ check, ...(slot === undefined ? {} : { slot }), verdict: "ok", detail });
  }

  warn(check: string, detail: string, fix: string, slot?: string): CheckResult {
    return this.add({ check, ...(slot === undefined ? {} : { slot }), verdict: "warn", detail, fix });
  }

  fail(check: string, detail: string, fix: string, slot?: string): CheckResult {
    return this.add({ check, ...(slot === undefined ? {} : { slot }), verdict: "FAIL", detail, fix });
  }

  get failed(): boolean {
    return this.results.some((result) => result.verdict === "FAIL");
  }
}

/** `[FAIL] key (slot rsa): ... \n       fix: ...` */
export function formatLine(result: CheckResult): string {
  const verdict = `[${result.verdict}]`.padEnd(7);
  const subject = result.slot === undefined ? result.check : `${result.check} (slot ${result.slot})`;
  const fix = result.fix && result.verdict !== "ok" ? `\n        fix: ${result.fix}` : "";
  return `${verdict} ${subject}: ${result.detail}${fix}\n`;
}

/** The one option of `doctor` and `list`: `--json`, or `--help`. A number is the exit status to return at once. */
export function parseJsonOption(argv: string[], command: string, usage: string): boolean | number {
  let json = false;
  for (const argument of argv) {
    if (argument === "--json") json = true;
    else if (argument === "-h" || argument === "--help") {
      process.stdout.write(usage);
      return 0;
    } else {
      process.stderr.write(`azure-keyvault-pkcs11 ${command}: unknown option '${argument}'\n${usage}`);
      return 2;
    }
  }
  return json;
}
