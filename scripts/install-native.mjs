// Builds the C shim with cmake-js into build/azure-keyvault-pkcs11.so, then the agent's SO_PEERCRED addon
// (src/agent/peercred) into build/peercred.node (`npm run build:native`).
//
// The module spawns `<node> <helper>` by absolute paths fixed here: the node running this script (override at
// run time with AZURE_KEYVAULT_PKCS11_NODE) and build/helper.cjs (AZURE_KEYVAULT_PKCS11_HELPER).
//
// cmake-js downloads Node's headers before configuring unless npm's `nodedir` names a directory that has them.
// The shim never includes a Node header, but the download would fail offline, so when nodedir is unset we point
// it at this node's own prefix when that prefix ships include/node/node.h (distro and NodeSource packages do).
//
// AKV_SANITIZE=1 builds the shim with AddressSanitizer and UndefinedBehaviorSanitizer (for tests only).
//
// The addon is Node-API: src/agent/peercred/package.json declares binary.napi_versions, so cmake-js compiles it
// against the node-api-headers and node-addon-api packages and downloads nothing, whatever nodedir says.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const cmakeJs = require.resolve("cmake-js/bin/cmake-js");
const artefact = path.join(repo, "build", "azure-keyvault-pkcs11.so");
const addon = path.join(repo, "build", "peercred.node");

const env = { ...process.env };
if (!env.npm_config_nodedir) {
  const prefix = path.resolve(process.execPath, "..", "..");
  if (existsSync(path.join(prefix, "include", "node", "node.h"))) env.npm_config_nodedir = prefix;
}

/** Runs `cmake-js compile` with these arguments and checks that it produced `output`; exits the script if not. */
function compile(args, output) {
  const result = spawnSync(process.execPath, [cmakeJs, "compile", ...args], { cwd: repo, env, stdio: "inherit" });
  if (result.status !== 0) {
    console.error(`build:native: cmake-js failed for ${path.basename(output)} (${result.error?.message ?? `exit status ${result.status}`})`);
    process.exit(1);
  }
  if (!existsSync(output)) {
    console.error(`build:native: cmake-js succeeded but ${output} is missing`);
    process.exit(1);
  }
}

const sanitize = process.env.AKV_SANITIZE === "1" ? "ON" : "OFF";
compile(
  [
    "--directory",
    path.join(repo, "native"),
    "--out",
    path.join(repo, "build", "native"),
    `--CDAKV_NODE_PATH=${process.execPath}`,
    `--CDAKV_HELPER_PATH=${path.join(repo, "build", "helper.cjs")}`,
    `--CDAKV_OUTPUT_DIR=${path.join(repo, "build")}`,
    `--CDAKV_SANITIZE=${sanitize}`,
  ],
  artefact,
);
console.log(`build:native: ${artefact} (node ${process.execPath})`);

compile(
  [
    "--directory",
    path.join(repo, "src", "agent", "peercred"),
    "--out",
    path.join(repo, "build", "peercred-build"),
    `--CDAKV_OUTPUT_DIR=${path.join(repo, "build")}`,
  ],
  addon,
);
console.log(`build:native: ${addon}`);
