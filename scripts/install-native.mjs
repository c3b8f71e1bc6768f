// Builds the C shim with cmake-js into build/azure-keyvault-pkcs11.so (`npm run build:native`).
//
// The module spawns `<node> <helper>` by absolute paths fixed here: the node running this script (override at
// run time with AZURE_KEYVAULT_PKCS11_NODE) and build/helper.cjs (AZURE_KEYVAULT_PKCS11_HELPER).
//
// cmake-js downloads Node's headers before configuring unless npm's `nodedir` names a directory that has them.
// The shim never includes a Node header, but the download would fail offline, so when nodedir is unset we point
// it at this node's own prefix when that prefix ships include/node/node.h (distro and NodeSource packages do).
//
// AKV_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (for tests only).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const cmakeJs = require.resolve("cmake-js/bin/cmake-js");
const artefact = path.join(repo, "build", "azure-keyvault-pkcs11.so");

const env = { ...process.env };
if (!env.npm_config_nodedir) {
  const prefix = path.resolve(process.execPath, "..", "..");
  if (existsSync(path.join(prefix, "include", "node", "node.h"))) env.npm_config_nodedir = prefix;
}

const sanitize = process.env.AKV_SANITIZE === "1" ? "ON" : "OFF";
const args = [
  cmakeJs,
  "compile",
  "--directory",
  path.join(repo, "native"),
  "--out",
  path.join(repo, "build", "native"),
  `--CDAKV_NODE_PATH=${process.execPath}`,
  `--CDAKV_HELPER_PATH=${path.join(repo, "build", "helper.cjs")}`,
  `--CDAKV_OUTPUT_DIR=${path.join(repo, "build")}`,
  `--CDAKV_SANITIZE=${sanitize}`,
];

const result = spawnSync(process.execPath, args, { cwd: repo, env, stdio: "inherit" });
if (result.status !== 0) {
  console.error(`build:native: cmake-js failed (${result.error?.message ?? `exit status ${result.status}`})`);
  process.exit(1);
}
if (!existsSync(artefact)) {
  console.error(`build:native: cmake-js succeeded but ${artefact} is missing`);
  process.exit(1);
}
console.log(`build:native: ${artefact} (node ${process.execPath})`);
