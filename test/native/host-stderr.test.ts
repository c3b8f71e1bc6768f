// Node hosts mark fd 2 close-on-exec. The helper must still write its log lines to the host's stderr, or a user
// of a Node program (pkcs11js) would get CKR_GENERAL_ERROR for a bad config with no explanation.
import test from "ava";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..", "..");

test("the helper's error line reaches stderr when the host is a Node process", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "akv-host-stderr-"));
  const config = path.join(dir, "config.json");
  writeFileSync(config, JSON.stringify({ slots: [{ label: "x" }] }));
  const script = `
    const pkcs11js = require(${JSON.stringify(path.join(root, "node_modules", "pkcs11js"))});
    const p = new pkcs11js.PKCS11();
    p.load(${JSON.stringify(path.join(root, "build", "azure-keyvault-pkcs11.so"))});
    try { p.C_Initialize(); process.stdout.write("initialised\\n"); }
    catch (error) { process.stdout.write(error.message + "\\n"); }
  `;
  const run = spawnSync(process.execPath, ["-e", script], {
    env: { ...process.env, AZURE_KEYVAULT_PKCS11_CONFIG: config },
    encoding: "utf8",
    timeout: 60_000,
  });
  t.is(run.stdout.trim(), "CKR_GENERAL_ERROR");
  t.regex(run.stderr, new RegExp(`${config.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: slots\\[0\\]\\.key_name`));
});
