// Bundles the helper and the CLI into self-contained CommonJS files so that nothing is resolved from
// node_modules at run time: the shim spawns build/helper.cjs from any working directory.
import { build } from "esbuild";

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
};

await Promise.all([
  build({ ...common, entryPoints: ["src/helper/main.ts"], outfile: "build/helper.cjs" }),
  build({ ...common, entryPoints: ["src/cli/main.ts"], outfile: "build/cli.cjs", banner: { js: "#!/usr/bin/env node" } }),
]);
