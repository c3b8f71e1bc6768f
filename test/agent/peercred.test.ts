// peerCredentials() against the kernel's own answer: every expected pid/uid/gid comes from the process it names
// (process.pid, process.getuid(), process.getgid() here, or those the other-user client reports about itself).
import { once } from "node:events";
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { peerCredentials, type PeerCredentials } from "../../src/agent/peercred.ts";
import { describe, run } from "../clients/process.ts";

// nobody, with a gid that differs from it so that swapped uid and gid fields show.
const OTHER_UID = 65534;
const OTHER_GID = 65533;
const self: PeerCredentials = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };

interface Listening {
  dir: string;
  socketPath: string;
  server: net.Server;
  /** The credentials peerCredentials() gives for each accepted socket, in accept order. */
  accepted: PeerCredentials[];
  close(): Promise<void>;
}

/** A Unix socket server in a fresh temp dir; every accepted socket is asked for its peer's credentials, then ended. */
async function listen(worldAccessible = false): Promise<Listening> {
  const dir = mkdtempSync(path.join(tmpdir(), "akv-peercred-"));
  const socketPath = path.join(dir, "agent.sock");
  const accepted: PeerCredentials[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {
      // The client may go first; its own exit status is checked.
    });
    accepted.push(peerCredentials(socket));
    // Answer once the client has said who it is, so it is still connected while the server reads its credentials.
    socket.once("data", () => socket.end());
  });
  server.listen(socketPath);
  await once(server, "listening");
  // Only for the other-user test: the other user needs to reach the socket (mkdtemp makes the directory 0700).
  if (worldAccessible) {
    chmodSync(dir, 0o755);
    chmodSync(socketPath, 0o777);
  }
  return {
    dir,
    socketPath,
    server,
    accepted,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("both ends of a connection in this process see this process's pid, uid and gid", async (t) => {
  const listening = await listen();
  t.teardown(() => listening.close());
  const client = net.connect(listening.socketPath);
  await once(client, "connect");
  t.deepEqual(peerCredentials(client), self, "client side: the server's credentials");
  client.write("hello");
  await once(client, "end");
  t.deepEqual(listening.accepted, [self], "server side: the client's credentials");
  client.destroy();
});

test("a client running as another user is seen with its own pid, uid and gid", async (t) => {
  const listening = await listen(true);
  t.teardown(() => listening.close());
  // The client says who it is (on stdout and to the server), then stays connected until the server ends the
  // connection, so its credentials are read while it is alive.
  const client = [
    "const socket = require('node:net').connect(process.argv[1]);",
    "const me = JSON.stringify({ pid: process.pid, uid: process.getuid(), gid: process.getgid() });",
    "socket.on('connect', () => { process.stdout.write(me); socket.write(me); });",
    "socket.on('data', () => {});",
    "socket.on('end', () => socket.end());",
    "socket.on('error', (error) => { console.error(error.message); process.exitCode = 1; });",
  ].join("\n");
  const result = await run(
    "setpriv",
    [`--reuid=${OTHER_UID}`, `--regid=${OTHER_GID}`, "--clear-groups", process.execPath, "-e", client, listening.socketPath],
    { env: { PATH: process.env.PATH }, cwd: listening.dir, timeoutMs: 30_000 },
  );
  t.is(result.code, 0, describe(result));
  const reported = JSON.parse(result.stdout) as PeerCredentials;
  t.is(reported.uid, OTHER_UID, "the client really ran as another user");
  t.is(reported.gid, OTHER_GID);
  t.not(reported.pid, process.pid);
  t.deepEqual(listening.accepted, [reported]);
});

test("a socket without a descriptor, a bad or non-socket descriptor and a socket without a peer throw", async (t) => {
  const listening = await listen();
  t.teardown(() => listening.close());
  const client = net.connect(listening.socketPath);
  await once(client, "connect");
  client.destroy();
  t.throws(() => peerCredentials(client), { message: /no file descriptor/ }, "destroyed socket");

  const withFd = (fd: unknown) => ({ _handle: { fd } }) as unknown as net.Socket;
  t.throws(() => peerCredentials(withFd(1 << 20)), { code: "EBADF", message: /^EBADF: / });
  t.throws(() => peerCredentials(withFd(-1)), { message: /no file descriptor/ });
  t.throws(() => peerCredentials(withFd(undefined)), { message: /no file descriptor/ });
  const file = openSync(path.join(listening.dir, "plain-file"), "w");
  t.teardown(() => closeSync(file));
  t.throws(() => peerCredentials(withFd(file)), { code: "ENOTSOCK", message: /^ENOTSOCK: / });

  // Linux keeps no peer credentials for a TCP connection (it reports uid (uid_t)-1 rather than an error).
  const tcpServer = net.createServer();
  tcpServer.listen(0, "127.0.0.1");
  await once(tcpServer, "listening");
  t.teardown(() => new Promise<void>((resolve) => tcpServer.close(() => resolve())));
  const tcp = net.connect((tcpServer.address() as net.AddressInfo).port, "127.0.0.1");
  t.teardown(() => tcp.destroy());
  await once(tcp, "connect");
  t.throws(() => peerCredentials(tcp), { message: /has no peer/ });
});
