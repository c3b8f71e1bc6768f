// A forward proxy on loopback for the proxy tests: CONNECT tunnels (what the module uses for the vault) and plain
// absolute-form HTTP requests (what the Azure SDK's proxy policy sends for an http:// token endpoint, such as the
// emulator's managed identity), each counted by target.
import { connect, createServer, type Server, type Socket } from "node:net";

export interface ConnectProxy {
  /** http://127.0.0.1:<port> */
  url: string;
  /** The `host:port` of every CONNECT the proxy accepted, in order. */
  tunnels: string[];
  /** The `host:port` of every plain HTTP request it forwarded. */
  forwarded: string[];
  /** Requests refused for missing or wrong credentials. */
  readonly refused: number;
  close(): Promise<void>;
}

const MAX_HEADER = 16 * 1024;

/** With `credentials` ("user:pass"), every request needs them as Basic Proxy-Authorization. */
export function connectProxy(credentials?: string): Promise<ConnectProxy> {
  const tunnels: string[] = [];
  const forwarded: string[] = [];
  let refused = 0;
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  };
  const server: Server = createServer((client) => {
    track(client);
    client.on("error", () => client.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_HEADER) client.destroy();
        return;
      }
      client.off("data", onData);
      const lines = head.subarray(0, end).toString("latin1").split("\r\n");
      const rest = head.subarray(end + 4);
      const authorization = lines.find((line) => /^proxy-authorization:/i.test(line))?.replace(/^[^:]+:\s*/, "");
      if (credentials !== undefined && authorization !== `Basic ${Buffer.from(credentials).toString("base64")}`) {
        refused++;
        client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      const tunnel = /^CONNECT (\S+):(\d+) HTTP\/1\.[01]$/.exec(lines[0] ?? "");
      const plain = /^([A-Z]+) http:\/\/([^/\s]+)(\/\S*) (HTTP\/1\.[01])$/.exec(lines[0] ?? "");
      let target: URL;
      let first: Buffer;
      if (tunnel) {
        target = new URL(`http://${tunnel[1]}:${tunnel[2]}`);
        tunnels.push(target.host);
        first = rest;
      } else if (plain) {
        target = new URL(`http://${plain[2]}`);
        forwarded.push(target.host);
        // Origin form for the server, and one request per connection, so every later request comes here again.
        const headers = lines.slice(1).filter((line) => !/^(proxy-|connection:)/i.test(line));
        first = Buffer.concat([Buffer.from([`${plain[1]} ${plain[3]} ${plain[4]}`, ...headers, "Connection: close", "", ""].join("\r\n"), "latin1"), rest]);
      } else {
        client.end("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      const upstream = connect(Number(target.port || 80), target.hostname.replace(/^\[|\]$/g, ""), () => {
        if (tunnel) client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (first.length > 0) upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      track(upstream);
      upstream.on("close", () => client.destroy());
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
    };
    client.on("data", onData);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      resolve({
        url: `http://127.0.0.1:${port}`,
        tunnels,
        forwarded,
        get refused() {
          return refused;
        },
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
