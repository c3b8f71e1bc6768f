// nginx keyless TLS: the master process loads `ssl_certificate_key engine:pkcs11:<uri>` through the libp11 engine
// and forks its workers, which then sign handshakes through the module. 50 curl processes (a fresh TLS handshake
// each) must verify the server against the vault's certificate.
import test from "ava";
import { chmod, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { describe, freeLoopbackPort, run, startClientFixture, startDaemon, waitFor, type ClientFixture, type ClientKey, type Daemon } from "./harness.ts";

let fixture: ClientFixture;
const REQUESTS = 50;
// nginx clears the environment of its workers except for these; the module in a worker needs them when it
// reinitialises after fork.
const MODULE_ENVIRONMENT = ["PATH", "HOME", "AZURE_KEYVAULT_PKCS11_CONFIG", "AZURE_KEYVAULT_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "NODE_EXTRA_CA_CERTS", "SOFTHSM2_CONF"];

test.before(async () => {
  fixture = await startClientFixture();
  // Workers run as nobody: let them read the config, the CA file and the engine config in the fixture folder.
  await chmod(fixture.dir, 0o755);
});

test.after.always(async () => {
  await fixture?.close();
});

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
    socket.setTimeout(2_000, () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** The DNS name the vault's certificate is issued for: its first DNS subjectAltName, else its CN. */
function hostNameOf(key: ClientKey): string {
  const dns = key.certificate.subjectAltName?.split(/,\s*/).find((name) => name.startsWith("DNS:"));
  if (dns) return dns.slice(4);
  const cn = /^CN=(.+)$/m.exec(key.certificate.subject)?.[1];
  if (!cn) throw new Error(`the certificate of ${key.keyName} names no host: ${key.certificate.subject}`);
  return cn;
}

async function startNginx(key: ClientKey, port: number): Promise<{ daemon: Daemon; errorLog: string }> {
  const prefix = fixture.file(`nginx-${key.kind}`);
  await fixture.runOk("mkdir", ["-p", path.join(prefix, "logs"), path.join(prefix, "tmp")]);
  await chmod(prefix, 0o755);
  const errorLog = path.join(prefix, "logs", "error.log");
  const passEnvironment = MODULE_ENVIRONMENT.filter((name) => fixture.env[name] !== undefined).map((name) => `env ${name};`).join("\n");
  const conf = path.join(prefix, "nginx.conf");
  await writeFile(
    conf,
    `daemon off;
master_process on;
worker_processes 2;
user nobody nogroup;
pid ${prefix}/nginx.pid;
error_log ${errorLog} info;
ssl_engine pkcs11;
${passEnvironment}
events { worker_connections 128; }
http {
  access_log ${prefix}/logs/access.log;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache off;
  ssl_session_tickets off;
  server {
    listen 127.0.0.1:${port} ssl;
    server_name ${hostNameOf(key)};
    ssl_certificate ${key.certificatePath};
    ssl_certificate_key "engine:pkcs11:${key.privateKeyUriWithPin}";
    location / { return 200 "served by worker $pid\\n"; }
  }
}
`,
  );
  // The module's debug lines go to nginx's output, which a failing test prints: a rare "Failed to enumerate slots"
  // from libp11 in the master (seen once in a full CI run, never alone) then shows what the module answered. The
  // workers do not get it (no `env` line): their output would only bury the master's.
  const env = { ...fixture.env, OPENSSL_CONF: await fixture.opensslEngineConfig(), AZURE_KEYVAULT_PKCS11_DEBUG: "1" };
  const daemon = startDaemon("nginx", ["-p", prefix, "-c", conf, "-e", errorLog], { env });
  return { daemon, errorLog };
}

for (const kind of ["rsa", "ec"] as const) {
  test(`nginx serves ${REQUESTS} fresh TLS handshakes with the ${kind} key on the token`, async (t) => {
    const key = fixture[kind];
    const port = await freeLoopbackPort();
    const host = hostNameOf(key);
    const { daemon, errorLog } = await startNginx(key, port);
    try {
      const curl = (extra: string[]) =>
        run("curl", ["--silent", "--show-error", "--max-time", "20", "--cacert", key.certificatePath, "--resolve", `${host}:${port}:127.0.0.1`,
          "--write-out", "\\n%{http_code} %{ssl_verify_result}", ...extra, `https://${host}:${port}/`], { env: fixture.env, timeoutMs: 30_000 });
      await waitFor(async () => {
        if (daemon.child.exitCode !== null) return true;
        return acceptsConnections(port);
      }, 60_000, "nginx to listen");
      t.is(daemon.child.exitCode, null, `nginx exited:\n${daemon.output()}\n${await readFile(errorLog, "utf8").catch(() => "")}`);
      const workers = new Set<string>();
      for (let i = 0; i < REQUESTS; i++) {
        // Alternate TLS 1.3 and 1.2 so the key signs both handshake styles (RSA: PSS and PKCS#1 v1.5).
        const result = await curl(i % 2 === 0 ? ["--tlsv1.3"] : ["--tlsv1.2", "--tls-max", "1.2"]);
        if (result.code !== 0 || !/\n200 0$/.test(result.stdout)) {
          t.fail(`request ${i + 1} failed\n${describe(result)}\n--- error.log ---\n${await readFile(errorLog, "utf8").catch(() => "")}`);
          return;
        }
        workers.add(/served by worker (\d+)/.exec(result.stdout)?.[1] ?? "?");
      }
      t.pass(`${REQUESTS} handshakes verified; workers that served: ${[...workers].join(", ")}`);
      // A client that trusts a different certificate must refuse the server: the check can fail.
      const other = fixture[kind === "rsa" ? "ec" : "rsa"];
      const wrong = await run("curl", ["--silent", "--max-time", "20", "--cacert", other.certificatePath, "--resolve", `${host}:${port}:127.0.0.1`, `https://${host}:${port}/`], {
        env: fixture.env,
        timeoutMs: 30_000,
      });
      t.not(wrong.code, 0, describe(wrong));
      const log = await readFile(errorLog, "utf8");
      t.notRegex(log, /\[(crit|alert|emerg)\]/, log);
    } finally {
      await daemon.stop();
    }
  });
}
