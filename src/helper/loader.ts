// build/helper.cjs, the file the shim starts: it runs the helper bundle (build/helper-main.cjs) with V8's code cache
// for it (build/helper-main.cache, written by scripts/bundle.mjs). Compiling the 700 KB bundle took ~40 ms of every
// C_Initialize; with the cache V8 skips it. A cache made by another Node or V8 build, or for other source, is
// rejected by V8 itself and the bundle then compiles as usual, so a stale cache costs time, never correctness.
// `npm run build` finally runs the helper once through a typical client's calls (scripts/warm-code-cache.mjs) with
// AZURE_KEYVAULT_PKCS11_CODE_CACHE_OUT set, and the cache written at that run's exit also holds every function the
// calls compiled on first use: another ~12 ms off each cold start.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire, Module } from "node:module";
import path from "node:path";
import { constants, Script } from "node:vm";

/** Must stay identical to the wrapper in scripts/bundle.mjs: V8 accepts the cache only for the same source. */
const WRAPPER = ["(function (exports, require, module, __filename, __dirname) { ", "\n});"] as const;

const file = path.join(__dirname, "helper-main.cjs");
let cachedData: Buffer | undefined;
try {
  cachedData = readFileSync(path.join(__dirname, "helper-main.cache"));
} catch {
  // No cache (a build without one): compile from source.
}
const script = new Script(WRAPPER[0] + readFileSync(file, "utf8") + WRAPPER[1], {
  filename: file,
  ...(cachedData ? { cachedData } : {}),
  importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
});
const main = new Module(file);
main.filename = file;
const run = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
run.call(main.exports, main.exports, createRequire(file), main, file, path.dirname(file));

const cacheOut = process.env.AZURE_KEYVAULT_PKCS11_CODE_CACHE_OUT;
if (cacheOut) process.on("exit", () => writeFileSync(cacheOut, script.createCachedData()));
