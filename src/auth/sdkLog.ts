// The Azure SDK logs through @azure/logger, which by default writes unredacted to stderr when AZURE_LOG_LEVEL is
// set. Route it through our logger (which redacts) and only in debug mode: warnings and errors with
// AZURE_KEYVAULT_PKCS11_DEBUG=1, everything the SDK says (per-request lines) with AZURE_KEYVAULT_PKCS11_DEBUG=sdk.
import { format } from "node:util";
import { AzureLogger, setLogLevel } from "@azure/logger";
import { isDebug, log } from "../log/log.ts";

let installed = false;

export function installSdkLogging(env: NodeJS.ProcessEnv = process.env): void {
  if (installed) return;
  installed = true;
  AzureLogger.log = (...args: unknown[]): void => {
    if (!isDebug()) return;
    const line = format(...args);
    // core-client warns about its own internal use of baseUri on every identity client: noise, not news.
    if (line.includes("The baseUri option for SDK Clients has been deprecated")) return;
    log.debug(`sdk: ${line}`);
  };
  if (!isDebug()) {
    setLogLevel("error");
    AzureLogger.log = (): void => {};
    return;
  }
  setLogLevel(env.AZURE_KEYVAULT_PKCS11_DEBUG === "sdk" ? "info" : "warning");
}
