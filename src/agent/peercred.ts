// Who is at the other end of the agent's Unix socket: the kernel's SO_PEERCRED record (pid, uid, gid of the process
// that connected), read by the native addon src/agent/peercred (built into build/peercred.node by
// `npm run build:native`), since Node has no API for it.
import { createRequire } from "node:module";
import type net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface Addon {
  peerCredentials(fd: number): PeerCredentials;
}

/**
 * build/peercred.node. Bundled (build/helper-main.cjs, CommonJS) the addon sits next to the bundle, in __dirname; run
 * from source under tsx (ESM, no __dirname) it is <repo>/build, found from this file's URL. esbuild empties
 * import.meta in a CommonJS bundle and warns about it, except inside a try block: the branch is never taken there.
 */
function addonPath(): string {
  if (typeof __dirname === "string") return path.join(__dirname, "peercred.node");
  try {
    return fileURLToPath(new URL("../../build/peercred.node", import.meta.url));
  } catch (error) {
    throw new Error("peercred: cannot locate build/peercred.node (neither bundled nor an ES module)", { cause: error });
  }
}

let addon: Addon | undefined;

function loadAddon(): Addon {
  if (!addon) {
    const file = addonPath();
    // A computed path through createRequire, so esbuild leaves the .node file alone.
    try {
      addon = createRequire(file)(file) as Addon;
    } catch (error) {
      throw new Error(`peercred: cannot load ${file} (run \`npm run build:native\`)`, { cause: error });
    }
  }
  return addon;
}

/**
 * The credentials of the process at the other end of a connected Unix socket (a net.Server's accepted socket or a
 * client's), as the kernel recorded them at connect(): they cannot be forged by the peer. Throws when the socket has
 * no descriptor (destroyed, not yet connected, or not on Unix) or no peer (not a connected Unix socket), and with
 * the errno's code (EBADF, ENOTSOCK, ...) when getsockopt fails.
 */
export function peerCredentials(socket: net.Socket): PeerCredentials {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    throw new Error("peerCredentials: the socket has no file descriptor (destroyed, not connected, or not a Unix socket)");
  }
  const credentials = loadAddon().peerCredentials(fd);
  // Linux answers uid and gid (uid_t)-1 for a socket without a peer (unconnected, or TCP) instead of failing; no
  // process has that uid. pid 0 alone is not that case: it is a peer in a PID namespace this process cannot see.
  if (credentials.uid === 0xffffffff) throw new Error(`peerCredentials: fd ${fd} has no peer (not a connected Unix socket)`);
  return credentials;
}
