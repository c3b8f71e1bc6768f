// The helper never loads an OpenSSL configuration of the host's: a global OPENSSL_CONF that loads a provider for
// every program (pkcs11-provider with this very module, for one) would make node call back into the module. The
// hostile configuration here would stop node from starting at all if it were read.
import test from "ava";
import { spawnSync } from "node:child_process";
import { verify } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pkcs11js from "pkcs11js";
import { signOnce, startModuleFixture, type ModuleFixture } from "./harness.ts";

const hostile = path.join(mkdtempSync(path.join(tmpdir(), "akv-openssl-conf-")), "openssl.cnf");
// Both sections: openssl_conf is what OpenSSL programs read, nodejs_conf what node reads by default.
writeFileSync(
  hostile,
  [
    "openssl_conf = hostile_init",
    "nodejs_conf = hostile_init",
    "[hostile_init]",
    "providers = provider_section",
    "[provider_section]",
    "recursion = recursion_section",
    "[recursion_section]",
    "module = /nonexistent/pkcs11-provider-loading-this-module.so",
    "activate = 1",
    "",
  ].join("\n"),
);

let fixture: ModuleFixture;
test.before(async () => {
  process.env.OPENSSL_CONF = hostile;
  process.env.OPENSSL_MODULES = path.dirname(hostile);
  fixture = await startModuleFixture({ keys: "ec:EC:P-256" });
});
test.after.always(async () => {
  delete process.env.OPENSSL_CONF;
  delete process.env.OPENSSL_MODULES;
  await fixture?.close();
});

test("the configuration is hostile: node itself refuses to start with it", (t) => {
  const run = spawnSync(process.execPath, ["-e", "require('node:crypto').createHash('sha256')"], { env: { ...process.env, OPENSSL_CONF: hostile }, encoding: "utf8" });
  t.not(run.status, 0, "node started with a configuration that loads a missing provider");
});

test("with that OPENSSL_CONF in the host's environment the helper starts and signs, and the signature verifies", (t) => {
  const data = Buffer.from("signed under a hostile OPENSSL_CONF");
  const signature = signOnce(fixture, "ec", { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, data);
  t.true(verify("sha256", data, { key: fixture.key("ec").publicKey, dsaEncoding: "ieee-p1363" }, signature));
});
