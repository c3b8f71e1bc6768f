// The helper's process: a sanitised environment (a hostile NODE_OPTIONS changes nothing), only fds 0-3 from
// the host, stdin/stdout on /dev/null, its own session, default signal handling; from any cwd and PATH.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { fakeHelperPath, onlyDriverLines, runDriver, rv } from "./driver.ts";

interface HelperReport {
  pid: number;
  sid: number;
  cwd: string;
  argv: string[];
  execArgv: string[];
  nodeEnv: Record<string, string>;
  keptEnv: string | null;
  fds: Record<string, string>;
  sigBlk: string;
  sigIgn: string;
}

test("the helper runs with a sanitised environment and descriptors, whatever the host's", async (t) => {
  const marker = path.join(mkdtempSync(path.join(tmpdir(), "akv-marker-")), "inherited.txt");
  writeFileSync(marker, "must not be inherited\n");
  const run = await runDriver("report", [marker], {
    cwd: "/",
    env: {
      PATH: "",
      NODE_OPTIONS: "--require /nonexistent/hook.js",
      NODE_PATH: "/nonexistent",
      NODE_TLS_REJECT_UNAUTHORIZED: "0",
      NODE_CHANNEL_FD: "7",
      NODE_EXTRA_CA_CERTS: "/etc/ssl/certs/ca-certificates.crt",
      FAKE_HELPER_MARKER: "kept",
    },
  });
  t.is(run.status, 0, run.stderr);
  t.is(run.values.get("init"), rv.OK, run.stderr);
  t.is(run.values.get("Finalize"), rv.OK);
  t.true(onlyDriverLines(run.stdout), run.stdout);
  const report = JSON.parse(run.values.get("report") ?? "null") as HelperReport;

  t.deepEqual(report.nodeEnv, { NODE_EXTRA_CA_CERTS: "/etc/ssl/certs/ca-certificates.crt" });
  t.is(report.keptEnv, "kept");
  t.deepEqual(report.execArgv, []);
  t.is(report.argv[1], fakeHelperPath);
  t.is(report.cwd, "/");

  t.is(report.fds["0"], "/dev/null");
  t.is(report.fds["1"], "/dev/null");
  t.regex(report.fds["3"] ?? "", /^socket:/);
  t.false(Object.values(report.fds).includes(marker), JSON.stringify(report.fds));

  t.is(report.sid, report.pid, "setsid");
  t.is(report.sigBlk, "0000000000000000");
  const ignored = BigInt(`0x${report.sigIgn}`);
  t.is(ignored & (1n << 1n), 0n, "SIGINT (ignored by the host) is back to its default in the helper");
});
