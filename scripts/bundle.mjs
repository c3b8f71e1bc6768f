// Bundles the helper and the CLI into self-contained CommonJS files so that nothing is resolved from
// node_modules at run time: the shim spawns build/helper.cjs from any working directory. build/helper.cjs is a small
// loader (src/helper/loader.ts) that runs the helper bundle, build/helper-main.cjs, with the V8 code cache written
// here (build/helper-main.cache), which saves compiling the bundle at every C_Initialize.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Script } from "node:vm";
import { Ajv } from "ajv";
import standaloneCode from "ajv/dist/standalone/index.js";
import { build } from "esbuild";

const root = path.resolve(import.meta.dirname, "..");
const validatorModule = path.join(root, "src", "config", "validator.ts");

/**
 * Replaces src/config/validator.ts with ajv's standalone validator for config/config.schema.json, generated now with
 * the module's own AJV_OPTIONS: the helper then neither compiles the schema at C_Initialize nor carries ajv's compiler.
 */
const standaloneConfigValidator = {
  name: "standalone-config-validator",
  setup(builder) {
    builder.onLoad({ filter: /[\\/]src[\\/]config[\\/]validator\.ts$/ }, (args) => {
      if (path.resolve(args.path) !== validatorModule) return undefined;
      const source = readFileSync(validatorModule, "utf8");
      const literal = /export const AJV_OPTIONS = (\{[^}]*\});/.exec(source)?.[1];
      if (!literal) throw new Error(`${validatorModule}: AJV_OPTIONS not found; keep it a one-line object literal`);
      const options = new Function(`return (${literal});`)();
      const schema = JSON.parse(readFileSync(path.join(root, "config", "config.schema.json"), "utf8"));
      const ajv = new Ajv({ ...options, code: { source: true, esm: true } });
      const code = standaloneCode(ajv, ajv.compile(schema));
      return {
        contents: `${code}\nexport const AJV_OPTIONS = ${literal};\nexport function configValidator() { return validate; }\n`,
        loader: "js",
        resolveDir: root,
        watchFiles: [validatorModule, path.join(root, "config", "config.schema.json")],
      };
    });
  },
};

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  sourcemap: "linked",
  minify: true,
  keepNames: true,
  legalComments: "none",
  // Optional requires inside the Azure SDK's dependencies that are never taken on Node.
  external: ["supports-color"],
  logLevel: "warning",
  plugins: [standaloneConfigValidator],
};

/** Must stay identical to WRAPPER in src/helper/loader.ts: V8 accepts a code cache only for the same source. */
const WRAPPER = ["(function (exports, require, module, __filename, __dirname) { ", "\n});"];

await Promise.all([
  build({
    ...common,
    entryPoints: ["src/helper/main.ts"],
    outfile: "build/helper-main.cjs",
    // The Azure SDK asks `typeof FormData` on every request, and the first such look makes Node load its bundled
    // undici: ~25 ms of every cold start. The helper's requests are JSON and never FormData, so in its bundle the
    // global is undefined and both checks (ts-http-runtime formData.js and getRequestBody) fold to false.
    define: { FormData: "undefined" },
    // keepNames makes esbuild wrap every function created at run time in a __name() call that defines its `name`
    // property; the SDK creates dozens of closures per request, and the calls cost ~8% of the helper's CPU per
    // signature (A/B on the emulator: 0.374 -> 0.345 ms). Nothing in the helper reads a minified function's name:
    // the SDK's and our error classes set `name` themselves, and stack traces never used the property.
    keepNames: false,
  }),
  build({ ...common, entryPoints: ["src/helper/loader.ts"], outfile: "build/helper.cjs", sourcemap: false }),
  build({ ...common, entryPoints: ["src/cli/main.ts"], outfile: "build/cli.cjs", banner: { js: "#!/usr/bin/env node" } }),
]);

// Compiled, not run: the cache holds what V8 compiles eagerly (the bundle's top level), which is most of the cost.
// It is only valid for this Node build, the one `npm run build:native` fixes as the helper's node.
const helperMain = path.join(root, "build", "helper-main.cjs");
const script = new Script(WRAPPER[0] + readFileSync(helperMain, "utf8") + WRAPPER[1], { filename: helperMain });
writeFileSync(path.join(root, "build", "helper-main.cache"), script.createCachedData());
