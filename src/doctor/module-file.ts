// The module library itself and its p11-kit registration. p11-kit finds modules through *.module files in its
// config folders (what `p11-kit list-modules` reads); the files are read here rather than running list-modules,
// which would C_Initialize every registered module, this one included.
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { configHome } from "../config/load.ts";
import type { Report } from "./report.ts";

export const MODULE_FILE = "azure-keyvault-pkcs11.so";
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** The .so next to the running CLI (build/ in a checkout), then the installed multiarch locations. */
export function moduleCandidates(cliPath: string | undefined): string[] {
  const candidates: string[] = [];
  if (cliPath) {
    try {
      candidates.push(path.join(path.dirname(realpathSync(cliPath)), MODULE_FILE));
    } catch {
      // The CLI was started from somewhere it cannot be found again: only the installed locations remain.
    }
  }
  for (const lib of ["/usr/lib", "/usr/local/lib"]) {
    let entries: string[] = [];
    try {
      entries = readdirSync(lib).filter((entry) => /-linux-gnu/.test(entry));
    } catch {
      continue;
    }
    for (const triplet of entries.sort()) candidates.push(path.join(lib, triplet, "pkcs11", MODULE_FILE));
    candidates.push(path.join(lib, "pkcs11", MODULE_FILE));
  }
  return candidates;
}

function p11KitInstalled(env: NodeJS.ProcessEnv): string | undefined {
  for (const folder of (env.PATH ?? "/usr/bin:/bin").split(":")) {
    if (!folder) continue;
    const candidate = path.join(folder, "p11-kit");
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** p11-kit's module folders: the system's, the administrator's, the user's. */
function registrationFolders(env: NodeJS.ProcessEnv): string[] {
  const home = env.HOME ? path.join(env.HOME, ".config", "pkcs11", "modules") : undefined;
  const xdg = path.join(configHome(env), "pkcs11", "modules");
  return [...new Set(["/usr/share/p11-kit/modules", "/etc/pkcs11/modules", xdg, ...(home ? [home] : [])])];
}

function sameFile(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

export function checkModuleFile(env: NodeJS.ProcessEnv, cliPath: string | undefined, report: Report): void {
  const candidates = moduleCandidates(cliPath);
  const found = candidates.find((candidate) => existsSync(candidate));
  if (!found) {
    report.fail("module file", `no ${MODULE_FILE} found (looked at ${candidates.join(", ")})`, "build it (`npm run build` in a checkout) or install the package");
    return;
  }
  const problem = (() => {
    try {
      if (!statSync(found).isFile()) return "is not a regular file";
      const head = readFileSync(found).subarray(0, 4);
      return head.equals(ELF_MAGIC) ? undefined : "is not an ELF shared library";
    } catch (error) {
      return `cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"})`;
    }
  })();
  if (problem) {
    report.fail("module file", `${found} ${problem}`, "rebuild (`npm run build`) or reinstall the package");
    return;
  }
  report.ok("module file", found);

  const p11kit = p11KitInstalled(env);
  if (!p11kit) {
    report.ok("p11-kit", "p11-kit is not installed: programs load the module by its path");
    return;
  }
  const registered: string[] = [];
  for (const folder of registrationFolders(env)) {
    let files: string[] = [];
    try {
      files = readdirSync(folder).filter((file) => file.endsWith(".module"));
    } catch {
      continue;
    }
    for (const file of files) {
      const full = path.join(folder, file);
      let text = "";
      try {
        text = readFileSync(full, "utf8");
      } catch {
        continue;
      }
      const named = /^\s*module\s*:\s*(.+?)\s*$/m.exec(text)?.[1];
      if (!named) continue;
      // A relative name is looked up in p11-kit's own module folder, e.g. /usr/lib/x86_64-linux-gnu/pkcs11/.
      const matches = path.isAbsolute(named) ? sameFile(named, found) : path.basename(named) === MODULE_FILE && path.basename(path.dirname(found)) === "pkcs11";
      if (matches) registered.push(full);
    }
  }
  if (registered.length > 0) {
    report.ok("p11-kit", `registered by ${registered.join(", ")}: p11-kit-proxy users and p11tool find it without --provider`);
  } else {
    report.warn(
      "p11-kit",
      `no p11-kit module file names ${found}: p11tool, GnuTLS and p11-kit-proxy users need --provider/--module to find it`,
      `register it: printf 'module: ${found}\\n' > ~/.config/pkcs11/modules/azure-keyvault-pkcs11.module (for you) or /usr/share/p11-kit/modules/azure-keyvault-pkcs11.module (for everyone)`,
    );
  }
}
