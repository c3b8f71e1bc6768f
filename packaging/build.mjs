// `npm run package`: builds dist/azure-keyvault-pkcs11_<version>_<deb arch>.deb and
// dist/azure-keyvault-pkcs11-<version>-linux-<node arch>.tar.gz from an up-to-date `npm run build` (docs/install.md).
//
// Both carry one tree (the tarball under azure-keyvault-pkcs11-<version>/):
//   usr/lib/<triplet>/pkcs11/azure-keyvault-pkcs11.so   the shim, built with AKV_RELATIVE_PATHS: it starts
//   usr/lib/azure-keyvault-pkcs11/node                  this Node runtime (npm package node-linux-<arch>, pinned in
//                                                         packaging/runtime.json) with the helper next to it
//   usr/lib/azure-keyvault-pkcs11/{helper.cjs,helper-main.cjs,helper-main.cache,cli.cjs,peercred.node}
//   usr/bin/azure-keyvault-pkcs11                        packaging/azure-keyvault-pkcs11.sh
//   usr/share/p11-kit/modules/azure-keyvault-pkcs11.module, usr/lib/systemd/{user,system}/*.service,
//   usr/share/doc/azure-keyvault-pkcs11/ (README, docs, schema, example config, copyright),
//   etc/azure-keyvault-pkcs11/config.json                a conffile that lists no slots (packaging/debian/config.json)
//
// The V8 code cache is only valid for the node that wrote it, so it is made again here with the shipped node.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const build = path.join(root, "build");
const work = path.join(build, "package");
const dist = path.join(root, "dist");
const { version } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
const runtime = JSON.parse(readFileSync(path.join(import.meta.dirname, "runtime.json"), "utf8"));

function fail(message) {
  console.error(`package: ${message}`);
  process.exit(1);
}

/** Runs a command with inherited stderr and returns its trimmed stdout; exits the script when it fails. */
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], ...options });
  if (result.status !== 0) fail(`${command} ${args.join(" ")} failed (${result.error?.message ?? `exit status ${result.status}`})`);
  return result.stdout.trim();
}

function tryRun(command, args) {
  const result = spawnSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

const NODE_ARCH = { amd64: "x64", arm64: "arm64" };
const debArch = tryRun("dpkg", ["--print-architecture"]) ?? Object.keys(NODE_ARCH).find((k) => NODE_ARCH[k] === process.arch);
const nodeArch = NODE_ARCH[debArch];
if (!nodeArch || !runtime.integrity[nodeArch]) fail(`no pinned Node runtime for architecture ${debArch ?? process.arch}`);
const triplet = tryRun("dpkg-architecture", ["-qDEB_HOST_MULTIARCH"]) ?? tryRun("gcc", ["-print-multiarch"]);
if (!triplet) fail("cannot tell the multiarch triplet (neither dpkg-architecture nor gcc -print-multiarch answered)");

for (const file of ["helper.cjs", "helper-main.cjs", "helper-main.cache", "cli.cjs", "peercred.node", "azure-keyvault-pkcs11.so"]) {
  if (!existsSync(path.join(build, file))) fail(`build/${file} is missing: run \`npm run build\` first`);
}

/** The runtime's npm tarball, from npm's own cache or the registry, checked against the pinned sha512. */
function fetchRuntime() {
  const name = `node-linux-${nodeArch}`;
  const dir = path.join(work, "runtime");
  const tgz = path.join(dir, `${name}-${runtime.version}.tgz`);
  const matches = () => existsSync(tgz) && `sha512-${createHash("sha512").update(readFileSync(tgz)).digest("base64")}` === runtime.integrity[nodeArch];
  if (!matches()) {
    mkdirSync(dir, { recursive: true });
    run("npm", ["pack", `${name}@${runtime.version}`, "--pack-destination", dir, "--silent"]);
    if (!matches()) fail(`${tgz} does not match the sha512 pinned in packaging/runtime.json`);
  }
  const unpacked = path.join(dir, `${name}-${runtime.version}`);
  rmSync(unpacked, { recursive: true, force: true });
  mkdirSync(unpacked, { recursive: true });
  run("tar", ["-xzf", tgz, "-C", unpacked, "package/bin/node", "package/LICENSE"]);
  return { node: path.join(unpacked, "package", "bin", "node"), license: path.join(unpacked, "package", "LICENSE") };
}

/** The shim with node and helper relative to its own folder, usr/lib/<triplet>/pkcs11/. */
function buildShim() {
  const dir = path.join(work, "native");
  run("cmake", [
    "-S", path.join(root, "native"), "-B", dir, "-DCMAKE_BUILD_TYPE=Release", "-DAKV_RELATIVE_PATHS=ON",
    "-DAKV_NODE_PATH:STRING=../../azure-keyvault-pkcs11/node",
    "-DAKV_HELPER_PATH:STRING=../../azure-keyvault-pkcs11/helper.cjs",
    `-DAKV_OUTPUT_DIR=${path.join(dir, "out")}`,
  ]);
  run("cmake", ["--build", dir]);
  return path.join(dir, "out", "azure-keyvault-pkcs11.so");
}

/**
 * Runs scripts/warm-code-cache.mjs with the shipped node as the helper's node, and returns the cache it wrote.
 * The script writes build/helper-main.cache, the cache of today's build, so that one is put back afterwards.
 */
function warmCodeCache(node) {
  const devCache = path.join(build, "helper-main.cache");
  const saved = path.join(work, "helper-main.cache.build");
  const packaged = path.join(work, "helper-main.cache");
  copyFileSync(devCache, saved);
  try {
    const env = { ...process.env, AZURE_KEYVAULT_PKCS11_NODE: node, AZURE_KEYVAULT_PKCS11_AGENT: "0" };
    delete env.AZURE_KEYVAULT_PKCS11_HELPER;
    const out = run(process.execPath, [path.join(root, "scripts", "warm-code-cache.mjs")], { env });
    if (!out.includes("now holds")) fail(`the code-cache warm-up with ${node} did not finish: ${out}`);
    renameSync(devCache, packaged);
  } finally {
    renameSync(saved, devCache);
  }
  // V8 silently compiles from source when it rejects a cache: make sure the shipped node accepts this one.
  const probe = `const fs=require("fs"),vm=require("vm");const s=new vm.Script("(function (exports, require, module, __filename, __dirname) { "+fs.readFileSync(process.argv[1],"utf8")+"\\n});",{cachedData:fs.readFileSync(process.argv[2])});process.exit(s.cachedDataRejected?1:0)`;
  if (spawnSync(node, ["-e", probe, path.join(build, "helper-main.cjs"), packaged]).status !== 0) {
    fail(`${node} rejects the code cache it wrote`);
  }
  return packaged;
}

function place(from, to, mode) {
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(from, to);
  chmodSync(to, mode);
}

/** Copies every file under `from` to `to` with mode 0644. */
function placeTree(from, to) {
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    if (entry.isDirectory()) placeTree(source, path.join(to, entry.name));
    else place(source, path.join(to, entry.name), 0o644);
  }
}

function stage(tree, { node, license, shim, cache }) {
  rmSync(tree, { recursive: true, force: true });
  const lib = path.join(tree, "usr", "lib", "azure-keyvault-pkcs11");
  const doc = path.join(tree, "usr", "share", "doc", "azure-keyvault-pkcs11");
  place(shim, path.join(tree, "usr", "lib", triplet, "pkcs11", "azure-keyvault-pkcs11.so"), 0o644);
  place(node, path.join(lib, "node"), 0o755);
  for (const file of ["helper.cjs", "helper-main.cjs", "cli.cjs", "peercred.node"]) place(path.join(build, file), path.join(lib, file), 0o644);
  place(cache, path.join(lib, "helper-main.cache"), 0o644);
  place(path.join(import.meta.dirname, "azure-keyvault-pkcs11.sh"), path.join(tree, "usr", "bin", "azure-keyvault-pkcs11"), 0o755);
  place(path.join(root, "config", "azure-keyvault-pkcs11.module"), path.join(tree, "usr", "share", "p11-kit", "modules", "azure-keyvault-pkcs11.module"), 0o644);
  for (const unit of readdirSync(path.join(root, "config", "systemd"))) {
    const kind = unit.endsWith("-system.service") ? "system" : "user";
    place(path.join(root, "config", "systemd", unit), path.join(tree, "usr", "lib", "systemd", kind, unit), 0o644);
  }
  place(path.join(root, "README.md"), path.join(doc, "README.md"), 0o644);
  placeTree(path.join(root, "docs"), path.join(doc, "docs"));
  place(path.join(root, "config", "config.schema.json"), path.join(doc, "config.schema.json"), 0o644);
  place(path.join(root, "config", "config.example.json"), path.join(doc, "config.example.json"), 0o644);
  place(path.join(import.meta.dirname, "debian", "copyright"), path.join(doc, "copyright"), 0o644);
  place(license, path.join(doc, "node-LICENSE"), 0o644);
  place(path.join(import.meta.dirname, "debian", "config.json"), path.join(tree, "etc", "azure-keyvault-pkcs11", "config.json"), 0o644);
  chmodTree(tree);
}

/** Directories 0755 whatever the umask. */
function chmodTree(dir) {
  chmodSync(dir, 0o755);
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) chmodTree(path.join(dir, entry.name));
}

function filesUnder(dir, prefix = "") {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const relative = path.posix.join(prefix, entry.name);
    return entry.isDirectory() ? filesUnder(path.join(dir, entry.name), relative) : [relative];
  });
}

function buildDeb(tree, output) {
  const files = filesUnder(tree);
  const kib = Math.ceil(files.reduce((sum, f) => sum + statSync(path.join(tree, f)).size, 0) / 1024);
  const control = readFileSync(path.join(import.meta.dirname, "debian", "control"), "utf8")
    .replace("@VERSION@", version)
    .replace("@ARCH@", debArch)
    .replace("@INSTALLED_SIZE@", String(kib));
  const debian = path.join(tree, "DEBIAN");
  mkdirSync(debian, { mode: 0o755 });
  writeFileSync(path.join(debian, "control"), control, { mode: 0o644 });
  place(path.join(import.meta.dirname, "debian", "conffiles"), path.join(debian, "conffiles"), 0o644);
  const md5sums = files.filter((f) => !f.startsWith("etc/")).map((f) => `${createHash("md5").update(readFileSync(path.join(tree, f))).digest("hex")}  ${f}\n`);
  writeFileSync(path.join(debian, "md5sums"), md5sums.join(""), { mode: 0o644 });
  run("dpkg-deb", ["--root-owner-group", "-Zxz", "--build", tree, output]);
  rmSync(debian, { recursive: true });
}

function buildTarball(tree, output) {
  const prefix = `azure-keyvault-pkcs11-${version}`;
  const parent = path.join(work, "tarball");
  rmSync(parent, { recursive: true, force: true });
  mkdirSync(parent);
  cpSync(tree, path.join(parent, prefix), { recursive: true });
  run("tar", ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-czf", output, "-C", parent, prefix]);
  rmSync(parent, { recursive: true });
}

mkdirSync(work, { recursive: true });
mkdirSync(dist, { recursive: true });
const { node, license } = fetchRuntime();
const shim = buildShim();
const cache = warmCodeCache(node);
const tree = path.join(work, "root");
stage(tree, { node, license, shim, cache });
const deb = path.join(dist, `azure-keyvault-pkcs11_${version}_${debArch}.deb`);
const tarball = path.join(dist, `azure-keyvault-pkcs11-${version}-linux-${nodeArch}.tar.gz`);
buildDeb(tree, deb);
buildTarball(tree, tarball);
const mib = (file) => `${(statSync(file).size / 1048576).toFixed(1)} MiB`;
console.log(`package: ${path.relative(root, deb)} (${mib(deb)}), ${path.relative(root, tarball)} (${mib(tarball)}); node ${runtime.version} from npm node-linux-${nodeArch}`);
