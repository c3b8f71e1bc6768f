// `azure-keyvault-pkcs11 emulator`: starts the emulator, prints one READY line with what clients need, serves until
// SIGINT or SIGTERM. stdout carries only the READY line; everything else goes to stderr.
import { parseArgs } from "node:util";
import { log } from "../log/log.ts";
import { parseCertificateSpec } from "./certificates.ts";
import { startEmulator, type EmulatorOptions } from "./index.ts";
import { parsePermissions } from "./server.ts";

const USAGE = `usage: azure-keyvault-pkcs11 emulator [options]

  --port N                 HTTPS port on 127.0.0.1 (default 0: a free port)
  --keys SPEC              keys to create, e.g. rsa-signing-key:RSA:2048,ec-signing-key:EC:P-256,aes:oct-HSM:256
                           (RSA/RSA-HSM 2048|3072|4096, EC/EC-HSM P-256|P-384|P-521|P-256K, oct/oct-HSM 128|192|256)
  --certs NAMES|all        self-signed certificates backed by the keys of the same names (comma-separated);
                           NAME:USAGES sets the extended key usages instead of clientAuth+serverAuth+codeSigning,
                           e.g. uefi-key:codeSigning, all:codeSigning, tls:serverAuth+clientAuth (names:
                           serverAuth clientAuth codeSigning emailProtection timeStamping OCSPSigning, or OIDs)
  --ca-dir DIR             reuse DIR/ca.pem and DIR/ca-key.pem, or create them there
  --ca-out FILE            also write the CA certificate (PEM) to FILE
  --latency-ms N           add N ms to every data-plane response
  --tenant-id ID           tenant in the 401 challenge and in tokens (default random)
  --identity-header S      value required in X-IDENTITY-HEADER (default random)
  --token-lifetime S       access-token lifetime in seconds (default 3600)
  --managed-hsm            behave as a Managed HSM: challenge resource https://managedhsm.azure.net, RSA-HSM/EC-HSM/
                           oct-HSM keys only, AES-GCM/CBC/CBCPAD and CKM_AES_KEY_WRAP(_PAD), no certificates/secrets
  --deny LIST              refuse these permissions with 403 ForbiddenByPolicy, comma-separated (e.g.
                           keys/create,keys/import,secrets/set; names as in docs/emulator.md)
  --throttle-rate F        fraction of data-plane requests answered 429 with Retry-After
  --retry-after S          Retry-After seconds on injected 429s (default 1)
  --unavailable-rate F     fraction answered 503
  --drop-rate F            fraction whose connection is dropped
  --stall-rate F           fraction held for --stall-ms before they are answered normally
  --stall-ms N             how long a stalled request is held (default 5000)
  --fault-operations LIST  apply the faults only to these operations, comma-separated (e.g. get-certificate,sign;
                           names as in docs/emulator.md; default every data-plane request)
  --fault-seed N           seed for the fault sequence (same seed, same order: same faults)

Prints READY {"url","identityEndpoint","identityHeader","caFile","tenantId"} on stdout when serving.
Set AZURE_KEYVAULT_PKCS11_DEBUG=1 to log every request on stderr.
`;

function number(name: string, value: string | undefined, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new Error(`--${name}: '${value}' is not a ${integer ? "whole number" : "number"}`);
  return n;
}

export function parseEmulatorArgs(args: string[]): EmulatorOptions | "help" {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      port: { type: "string" },
      keys: { type: "string" },
      certs: { type: "string" },
      "ca-dir": { type: "string" },
      "ca-out": { type: "string" },
      "latency-ms": { type: "string" },
      "tenant-id": { type: "string" },
      "identity-header": { type: "string" },
      "token-lifetime": { type: "string" },
      "managed-hsm": { type: "boolean" },
      deny: { type: "string" },
      "throttle-rate": { type: "string" },
      "retry-after": { type: "string" },
      "unavailable-rate": { type: "string" },
      "drop-rate": { type: "string" },
      "stall-rate": { type: "string" },
      "stall-ms": { type: "string" },
      "fault-operations": { type: "string" },
      "fault-seed": { type: "string" },
    },
  });
  if (values.help) return "help";
  if (positionals.length > 0) throw new Error(`unexpected argument '${positionals[0]}'`);
  const options: EmulatorOptions = {};
  const set = <K extends keyof EmulatorOptions>(key: K, value: EmulatorOptions[K] | undefined): void => {
    if (value !== undefined) options[key] = value;
  };
  set("port", number("port", values.port, true));
  set("keys", values.keys);
  if (values.certs !== undefined) {
    options.certs = values.certs === "all" ? "all" : values.certs.split(",").filter((s) => s !== "");
    // A misspelt usage is a usage error (exit 2), not a start-up failure.
    if (options.certs !== "all") options.certs.forEach(parseCertificateSpec);
  }
  set("caDir", values["ca-dir"]);
  set("caOut", values["ca-out"]);
  set("latencyMs", number("latency-ms", values["latency-ms"], false));
  set("tenantId", values["tenant-id"]);
  set("identityHeader", values["identity-header"]);
  set("tokenLifetimeSeconds", number("token-lifetime", values["token-lifetime"], true));
  if (values["managed-hsm"]) options.managedHsm = true;
  if (values.deny !== undefined) {
    options.deny = values.deny.split(",").map((s) => s.trim()).filter((s) => s !== "");
    // A misspelt permission is a usage error (exit 2), not a start-up failure.
    parsePermissions(options.deny);
  }
  const faults: NonNullable<EmulatorOptions["faults"]> = {};
  const setFault = <K extends Exclude<keyof typeof faults, "operations">>(key: K, value: number | undefined): void => {
    if (value !== undefined) faults[key] = value;
  };
  setFault("throttleRate", number("throttle-rate", values["throttle-rate"], false));
  setFault("retryAfterSeconds", number("retry-after", values["retry-after"], true));
  setFault("unavailableRate", number("unavailable-rate", values["unavailable-rate"], false));
  setFault("dropRate", number("drop-rate", values["drop-rate"], false));
  setFault("stallRate", number("stall-rate", values["stall-rate"], false));
  setFault("stallMs", number("stall-ms", values["stall-ms"], true));
  setFault("seed", number("fault-seed", values["fault-seed"], true));
  if (values["fault-operations"] !== undefined) faults.operations = values["fault-operations"].split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (Object.keys(faults).length > 0) options.faults = faults;
  return options;
}

export async function runEmulatorCli(args: string[]): Promise<number> {
  let options: EmulatorOptions | "help";
  try {
    options = parseEmulatorArgs(args);
  } catch (error) {
    process.stderr.write(`azure-keyvault-pkcs11 emulator: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  if (options === "help") {
    process.stderr.write(USAGE);
    return 0;
  }
  const started = performance.now();
  let emulator;
  try {
    emulator = await startEmulator(options);
  } catch (error) {
    log.error(`emulator: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      log.info(`emulator: ${signal}, shutting down`);
      emulator.close().then(
        () => resolve(0),
        (error: unknown) => {
          log.error(`emulator: shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
          resolve(1);
        },
      );
    };
    // Handlers first, then READY: a supervisor may signal as soon as it reads the line.
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    const ready = {
      url: emulator.url,
      identityEndpoint: emulator.identityEndpoint,
      identityHeader: emulator.identityHeader,
      caFile: emulator.caFile,
      tenantId: emulator.tenantId,
    };
    process.stdout.write(`READY ${JSON.stringify(ready)}\n`);
    log.info(`emulator: serving ${emulator.url} (identity endpoint ${emulator.identityEndpoint}) after ${(performance.now() - started).toFixed(0)} ms; CA in ${emulator.caFile}`);
  });
}
