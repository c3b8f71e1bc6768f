// One logger for the helper and the CLI. It writes to stderr only: the helper's stdout is /dev/null, and a
// PKCS#11 library must never write to its host's stdout. Debug lines appear only with AZURE_KEYVAULT_PKCS11_DEBUG.

import { AsyncLocalStorage } from "node:async_hooks";

const PREFIX = "AZURE_KEYVAULT";

let debugEnabled = Boolean(process.env.AZURE_KEYVAULT_PKCS11_DEBUG);

export function setDebug(enabled: boolean): void {
  debugEnabled = enabled;
}

export function isDebug(): boolean {
  return debugEnabled;
}

// Bearer tokens, client secrets and JWT-looking strings are cut out of anything we log, whatever its source.
const SECRET_PATTERNS: RegExp[] = [
  /(bearer\s+)[A-Za-z0-9\-_.~+/]+=*/gi,
  /("?(?:access_token|client_secret|password|refresh_token|id_token|identityHeader|x-identity-header)"?\s*[:=]\s*"?)[^",\s}]+/gi,
  /eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g,
];

export function redact(text: string): string {
  let out = text;
  for (const pattern of SECRET_PATTERNS) {
    out = out.replace(pattern, (_match, keep?: string) => (typeof keep === "string" ? `${keep}<redacted>` : "<redacted>"));
  }
  return out;
}

/**
 * Where the lines of the call being served go instead of this process's stderr: an agent sends them to the host
 * process that made the call, whose stderr a private helper would have shared (src/helper/serve.ts).
 */
const lineSink = new AsyncLocalStorage<(line: string) => boolean>();

/**
 * Runs `task` with its log lines, and those of everything it starts, going to `sink`; a sink that returns false
 * (its connection is gone, but a timer started during a call still logs) leaves the line to this process's stderr.
 */
export function withLogSink<T>(sink: (line: string) => boolean, task: () => T): T {
  return lineSink.run(sink, task);
}

function write(level: string, message: string): void {
  const line = `${PREFIX}: ${level}${redact(message)}\n`;
  const sink = lineSink.getStore();
  try {
    if (!sink?.(line)) process.stderr.write(line);
  } catch {
    // A closed stderr or connection must never take the helper down.
  }
}

// An outage fails every call the same way: such a line is written once a minute, not once per call.
const REPEAT_WINDOW_MS = 60_000;
const lastWritten = new Map<string, number>();

function firstInWindow(line: string): boolean {
  const now = Date.now();
  const previous = lastWritten.get(line);
  if (previous !== undefined && now - previous < REPEAT_WINDOW_MS) return false;
  if (lastWritten.size >= 1000) lastWritten.clear();
  lastWritten.set(line, now);
  return true;
}

export const log = {
  debug(message: string): void {
    if (debugEnabled) write("", message);
  },
  info(message: string): void {
    write("", message);
  },
  warn(message: string): void {
    write("warning: ", message);
  },
  error(message: string): void {
    write("error: ", message);
  },
  /** A warning that repeats is written at most once a minute. */
  warnOncePerMinute(message: string): void {
    if (firstInWindow(`w${message}`)) write("warning: ", message);
  },
  /** An error that repeats is written at most once a minute. */
  errorOncePerMinute(message: string): void {
    if (firstInWindow(`e${message}`)) write("error: ", message);
  },
};
