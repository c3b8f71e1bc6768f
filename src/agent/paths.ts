// Where the per-user agent listens: the same rule as native/agent.c, which connects to it.
import path from "node:path";

export const AGENT_FOLDER_NAME = "azure-keyvault-pkcs11";
export const AGENT_SOCKET_NAME = "agent.sock";
export const AGENT_LOG_NAME = "agent.log";
export const AGENT_PID_NAME = "agent.pid";

/**
 * The private folder of the default socket: $XDG_RUNTIME_DIR/azure-keyvault-pkcs11 (a per-user tmpfs, mode 0700,
 * removed at logout), or /tmp/azure-keyvault-pkcs11-<uid> when there is no runtime folder.
 */
export function defaultAgentFolder(env: NodeJS.ProcessEnv): string {
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime && path.isAbsolute(runtime)) return path.join(runtime, AGENT_FOLDER_NAME);
  return `/tmp/${AGENT_FOLDER_NAME}-${process.getuid?.() ?? 0}`;
}

/** AZURE_KEYVAULT_PKCS11_AGENT_SOCKET, else the default folder's agent.sock. */
export function agentSocketPath(env: NodeJS.ProcessEnv): string {
  const explicit = env.AZURE_KEYVAULT_PKCS11_AGENT_SOCKET;
  if (explicit && explicit.trim() !== "") return path.resolve(explicit);
  return path.join(defaultAgentFolder(env), AGENT_SOCKET_NAME);
}
