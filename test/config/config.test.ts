import { X509Certificate } from "node:crypto";
import { UnusedVaultBackend } from "../vault/unused-backend.ts";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { ConfigError, loadConfig, type KeySlot, type ModuleConfig, type ResolvedSlot } from "../../src/config/index.ts";
import { discoverSlots } from "../../src/token/discover.ts";
import type { VaultBackend } from "../../src/vault/types.ts";
import { selfSignedCertificate } from "./certificates.ts";

const VAULT = "https://my-vault.vault.azure.net";

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), "akv-config-"));
}

/** Writes config.json (an object is serialised, a string written as is) and returns its path. */
function writeConfig(content: unknown, dir = tempDir()): string {
  const file = path.join(dir, "config.json");
  writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content, null, 2));
  return file;
}

/** Per-key slots, as most cases here configure them (vault tokens have their own cases). */
type KeySlotConfig = ModuleConfig & { slots: KeySlot[] };

function load(file: string, extra: NodeJS.ProcessEnv = {}): KeySlotConfig {
  return loadConfig({ AZURE_KEYVAULT_PKCS11_CONFIG: file, HOME: "/nonexistent-home", ...extra }) as KeySlotConfig;
}

function expectConfigError(t: import("ava").ExecutionContext, run: () => unknown, file: string, field: string, detail: RegExp): void {
  const error = t.throws(run, { instanceOf: ConfigError });
  t.is(error?.file, file, error?.message);
  t.is(error?.field, field, error?.message);
  t.regex(error?.detail ?? "", detail);
  t.is(error?.message, `${file}: ${field}: ${error?.detail}`);
}

test("the C++ module's example config loads, with defaults and a normalised vault URL", async (t) => {
  const dir = tempDir();
  const { pem, der } = await selfSignedCertificate("my-signing-key");
  writeFileSync(path.join(dir, "cert.pem"), pem);
  const file = writeConfig(
    {
      slots: [
        { label: "my-signing-key", key_name: "my-remote-key-name", vault_url: "https://My-Vault.vault.azure.net/", certificate_path: "cert.pem" },
        { key_name: "a-key-name-that-is-longer-than-thirty-two-characters" },
      ],
    },
    dir,
  );
  const config = load(file, { AZURE_KEYVAULT_URL: "https://other.vault.azure.net/" });
  t.is(config.source, file);
  t.is(config.timeoutMs, 60000);
  t.is(config.defaultVaultUrl, "https://other.vault.azure.net");
  t.deepEqual(config.caFiles, []);
  t.is(config.slots.length, 2);
  const [first, second] = config.slots;
  t.is(first!.label, "my-signing-key");
  t.is(first!.keyName, "my-remote-key-name");
  t.is(first!.vaultUrl, "https://my-vault.vault.azure.net");
  t.true(first!.certificateFromConfig);
  t.deepEqual(first!.certificateDer, der);
  t.is(first!.keyVersion, undefined);
  t.is(second!.label, "a-key-name-that-is-longer-than-t");
  t.is(second!.label.length, 32);
  t.is(second!.vaultUrl, "https://other.vault.azure.net");
  t.false(second!.certificateFromConfig);
  t.is(second!.certificateDer, undefined);
});

test("certificate (base64 DER), certificate_path (DER), key_version, ca_file and unknown fields", async (t) => {
  const dir = tempDir();
  const one = await selfSignedCertificate("one");
  const two = await selfSignedCertificate("two");
  const ca = await selfSignedCertificate("ca");
  mkdirSync(path.join(dir, "certs"));
  writeFileSync(path.join(dir, "certs", "two.der"), two.der);
  writeFileSync(path.join(dir, "ca.pem"), ca.pem);
  const file = writeConfig(
    {
      ca_file: "ca.pem",
      future_option: true,
      slots: [
        { key_name: "one", vault_url: VAULT, certificate: one.der.toString("base64"), key_version: "0123456789abcdef0123456789abcdef", comment: "ignored" },
        { key_name: "two", vault_url: VAULT, certificate_path: "certs/two.der", ca_file: path.join(dir, "ca.pem") },
      ],
    },
    dir,
  );
  const config = load(file);
  t.deepEqual(config.caFiles, [path.join(dir, "ca.pem")]);
  t.deepEqual(config.slots[0]!.certificateDer, one.der);
  t.is(new X509Certificate(config.slots[0]!.certificateDer!).subject, "CN=one");
  t.is(config.slots[0]!.keyVersion, "0123456789abcdef0123456789abcdef");
  t.deepEqual(config.slots[1]!.certificateDer, two.der);
  t.is(config.slots[1]!.caFile, path.join(dir, "ca.pem"));
});

test("an empty slot list is valid and leaves discovery to AZURE_KEYVAULT_URL", (t) => {
  const file = writeConfig({ slots: [] });
  const config = load(file, { AZURE_KEYVAULT_URL: VAULT });
  t.deepEqual(config.slots, []);
  t.is(config.defaultVaultUrl, VAULT);
  t.deepEqual(load(writeConfig({})).slots, []);
});

test("invalid JSON names the line and column", (t) => {
  const file = writeConfig('{\n  "slots": [\n    { "key_name": "a", }\n  ]\n}\n');
  expectConfigError(t, () => load(file), file, "line 3, column 24", /invalid JSON/);
  const truncated = writeConfig('{"slots": [');
  expectConfigError(t, () => load(truncated), truncated, "line 1, column 12", /invalid JSON/);
  const empty = writeConfig("");
  expectConfigError(t, () => load(empty), empty, "(file)", /empty/);
});

const schemaCases: Array<[string, unknown, string, RegExp]> = [
  ["top level not an object", [], "(top level)", /must be an object, not an array/],
  ["slots not an array", { slots: {} }, "slots", /must be an array/],
  ["slot not an object", { slots: ["key"] }, "slots[0]", /must be an object, not a string/],
  ["missing key_name", { slots: [{ key_name: "a", vault_url: VAULT }, { label: "b" }] }, "slots[1].key_name", /is required/],
  ["key_name not a string", { slots: [{ key_name: 7 }] }, "slots[0].key_name", /must be a string, not a number/],
  ["key_name with a space", { slots: [{ key_name: "my key" }] }, "slots[0].key_name", /not a Key Vault key name/],
  ["empty label", { slots: [{ key_name: "a", label: "" }] }, "slots[0].label", /must not be empty/],
  ["http vault_url", { slots: [{ key_name: "a", vault_url: "http://my-vault.vault.azure.net/" }] }, "slots[0].vault_url", /https/],
  ["bad key_version", { slots: [{ key_name: "a", vault_url: VAULT, key_version: "../x" }] }, "slots[0].key_version", /not a key version/],
  ["certificate and certificate_path", { slots: [{ key_name: "a", vault_url: VAULT, certificate: "AA==", certificate_path: "c.pem" }] }, "slots[0].certificate_path", /not both/],
  ["ca_file not a string", { ca_file: 1 }, "ca_file", /must be a string/],
];

for (const [name, content, field, detail] of schemaCases) {
  test(`schema: ${name} → ${field}`, (t) => {
    const file = writeConfig(content);
    expectConfigError(t, () => load(file), file, field, detail);
  });
}

test("vault_url must be a base URL; a slot without one needs AZURE_KEYVAULT_URL", (t) => {
  const withPath = writeConfig({ slots: [{ key_name: "a", vault_url: "https://v.vault.azure.net/keys/a" }] });
  expectConfigError(t, () => load(withPath), withPath, "slots[0].vault_url", /base URL/);
  const missing = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT }, { key_name: "b" }] });
  expectConfigError(t, () => load(missing), missing, "slots[1].vault_url", /AZURE_KEYVAULT_URL/);
  t.is(load(missing, { AZURE_KEYVAULT_URL: "https://b.vault.azure.net" }).slots[1]!.vaultUrl, "https://b.vault.azure.net");
});

test("labels: longer than 32 bytes of UTF-8 is refused, duplicates are refused", (t) => {
  const long = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, label: "ééééééééééééééééé" }] });
  expectConfigError(t, () => load(long), long, "slots[0].label", /34 bytes of UTF-8; a token label holds at most 32/);
  const exactly32 = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, label: "éééééééééééééééé" }] });
  t.is(load(exactly32).slots[0]!.label, "éééééééééééééééé");
  const duplicate = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, label: "x" }, { key_name: "b", vault_url: VAULT, label: "x" }] });
  expectConfigError(t, () => load(duplicate), duplicate, "slots[1].label", /duplicate label 'x', already used by slots\[0\]/);
  const prefix = "k".repeat(32);
  const defaults = writeConfig({ slots: [{ key_name: `${prefix}-one`, vault_url: VAULT }, { key_name: `${prefix}-two`, vault_url: VAULT }] });
  expectConfigError(t, () => load(defaults), defaults, "slots[1].label", /default label/);
});

test("certificates: unreadable file, not a certificate, not base64", async (t) => {
  const dir = tempDir();
  const missing = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate_path: "nope.pem" }] }, dir);
  expectConfigError(t, () => load(missing), missing, "slots[0].certificate_path", new RegExp(`cannot read ${path.join(dir, "nope.pem")}: no such file`));

  const garbageDir = tempDir();
  writeFileSync(path.join(garbageDir, "garbage.pem"), "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
  const garbage = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate_path: "garbage.pem" }] }, garbageDir);
  expectConfigError(t, () => load(garbage), garbage, "slots[0].certificate_path", /not a valid X\.509 certificate/);

  const notBase64 = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate: "not base64!" }] });
  expectConfigError(t, () => load(notBase64), notBase64, "slots[0].certificate", /not base64/);
  const notDer = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate: Buffer.from("hello world").toString("base64") }] });
  expectConfigError(t, () => load(notDer), notDer, "slots[0].certificate", /not a valid X\.509 certificate/);

  if (process.getuid?.() !== 0) {
    const lockedDir = tempDir();
    const { pem } = await selfSignedCertificate("locked");
    writeFileSync(path.join(lockedDir, "locked.pem"), pem);
    chmodSync(path.join(lockedDir, "locked.pem"), 0);
    const locked = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate_path: "locked.pem" }] }, lockedDir);
    expectConfigError(t, () => load(locked), locked, "slots[0].certificate_path", /permission denied/);
  }
});

test("ca_file: missing, or holding no certificate", (t) => {
  const dir = tempDir();
  const missing = writeConfig({ ca_file: "ca.pem" }, dir);
  expectConfigError(t, () => load(missing), missing, "ca_file", /cannot read .*ca\.pem: no such file/);
  writeFileSync(path.join(dir, "empty.pem"), "nothing here\n");
  const empty = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, ca_file: "empty.pem" }] }, dir);
  expectConfigError(t, () => load(empty), empty, "slots[0].ca_file", /holds no PEM certificate/);
});

test("environment: AZURE_KEYVAULT_URL and AZURE_KEYVAULT_PKCS11_TIMEOUT_MS are validated", (t) => {
  const file = writeConfig({ slots: [] });
  expectConfigError(t, () => load(file, { AZURE_KEYVAULT_URL: "http://v.vault.azure.net" }), "environment", "AZURE_KEYVAULT_URL", /https/);
  expectConfigError(t, () => load(file, { AZURE_KEYVAULT_URL: "not a url" }), "environment", "AZURE_KEYVAULT_URL", /not a URL/);
  for (const bad of ["0", "-5", "1.5", "abc", "99999999999"]) {
    expectConfigError(t, () => load(file, { AZURE_KEYVAULT_PKCS11_TIMEOUT_MS: bad }), "environment", "AZURE_KEYVAULT_PKCS11_TIMEOUT_MS", /whole number/);
  }
  t.is(load(file, { AZURE_KEYVAULT_PKCS11_TIMEOUT_MS: "2500" }).timeoutMs, 2500);
});

test("config path precedence: AZURE_KEYVAULT_PKCS11_CONFIG, then $XDG_CONFIG_HOME, then ~/.config", (t) => {
  const home = tempDir();
  const xdg = tempDir();
  mkdirSync(path.join(home, ".config", "azure-keyvault-pkcs11"), { recursive: true });
  mkdirSync(path.join(xdg, "azure-keyvault-pkcs11"), { recursive: true });
  const homeFile = path.join(home, ".config", "azure-keyvault-pkcs11", "config.json");
  const xdgFile = path.join(xdg, "azure-keyvault-pkcs11", "config.json");
  writeFileSync(homeFile, JSON.stringify({ slots: [{ key_name: "from-home", vault_url: VAULT }] }));
  writeFileSync(xdgFile, JSON.stringify({ slots: [{ key_name: "from-xdg", vault_url: VAULT }] }));
  const explicit = writeConfig({ slots: [{ key_name: "from-explicit", vault_url: VAULT }] });

  const withAll = loadConfig({ HOME: home, XDG_CONFIG_HOME: xdg, AZURE_KEYVAULT_PKCS11_CONFIG: explicit }) as KeySlotConfig;
  t.is(withAll.source, explicit);
  t.is(withAll.slots[0]!.keyName, "from-explicit");

  const withXdg = loadConfig({ HOME: home, XDG_CONFIG_HOME: xdg }) as KeySlotConfig;
  t.is(withXdg.source, xdgFile);
  t.is(withXdg.slots[0]!.keyName, "from-xdg");

  // XDG_CONFIG_HOME unset, or relative (which the XDG spec says to ignore): ~/.config.
  t.is(loadConfig({ HOME: home }).source, homeFile);
  t.is(loadConfig({ HOME: home, XDG_CONFIG_HOME: "relative/dir" }).source, homeFile);

  // Nothing in the user's folders: /etc, or no config at all.
  const etc = "/etc/azure-keyvault-pkcs11/config.json";
  const none = loadConfig({ HOME: tempDir(), XDG_CONFIG_HOME: tempDir(), AZURE_KEYVAULT_URL: VAULT });
  t.is(none.source, existsSync(etc) ? etc : null);
  if (!existsSync(etc)) {
    t.deepEqual(none.slots, []);
    t.is(none.defaultVaultUrl, VAULT);
  }
});

test("AZURE_KEYVAULT_PKCS11_CONFIG naming a missing file is an error, not a fallback", (t) => {
  const missing = path.join(tempDir(), "absent.json");
  expectConfigError(t, () => loadConfig({ AZURE_KEYVAULT_PKCS11_CONFIG: missing }), missing, "AZURE_KEYVAULT_PKCS11_CONFIG", /no such file/);
  const dir = tempDir();
  expectConfigError(t, () => loadConfig({ AZURE_KEYVAULT_PKCS11_CONFIG: dir }), dir, "(file)", /not a regular file/);
});

const keyNameOf = (slot: ResolvedSlot): string | undefined => (slot.kind === "key" ? slot.keyName : undefined);

function fakeBackend(names: string[]): VaultBackend & { listed: string[] } {
  const listed: string[] = [];
  return Object.assign(new UnusedVaultBackend(), {
    listed,
    async listKeyNames(vaultUrl: string) {
      listed.push(vaultUrl);
      return names;
    },
  });
}

test("discoverSlots: configured slots win; otherwise every key, sorted, labelled by its first 32 characters", async (t) => {
  const configured = load(writeConfig({ slots: [{ key_name: "b", vault_url: VAULT }, { key_name: "a", vault_url: VAULT }] }), { AZURE_KEYVAULT_URL: VAULT });
  const unused = fakeBackend(["zzz"]);
  t.deepEqual((await discoverSlots(configured, unused)).map(keyNameOf), ["b", "a"]);
  t.deepEqual(unused.listed, []);

  const long = "rsa-signing-key-with-a-very-long-name-indeed";
  const backend = fakeBackend(["ec-key", long, "Alpha", "rsa-key"]);
  const slots = await discoverSlots(load(writeConfig({}), { AZURE_KEYVAULT_URL: `${VAULT}/` }), backend);
  t.deepEqual(backend.listed, [VAULT]);
  t.deepEqual(
    slots.map((slot) => [slot.label, keyNameOf(slot), slot.vaultUrl, slot.kind === "key" && slot.certificateFromConfig]),
    [
      ["Alpha", "Alpha", VAULT, false],
      ["ec-key", "ec-key", VAULT, false],
      ["rsa-key", "rsa-key", VAULT, false],
      [long.slice(0, 32), long, VAULT, false],
    ],
  );

  t.deepEqual(await discoverSlots(load(writeConfig({})), fakeBackend(["x"])), []);
});

test("config/config.example.json matches the shipped schema", async (t) => {
  const { validateConfigShape } = await import("../../src/config/schema.ts");
  const { readFileSync } = await import("node:fs");
  const example = JSON.parse(readFileSync(new URL("../../config/config.example.json", import.meta.url), "utf8")) as unknown;
  t.is(validateConfigShape(example), undefined);
  t.deepEqual(validateConfigShape({ slots: [{ label: "x" }] }), { field: "slots[0].key_name", message: "is required: set key_name for one key's slot, or vault_url for a vault token of every key" });
});

test.serial("unknown fields are accepted and reported at debug level only", async (t) => {
  const { setDebug } = await import("../../src/log/log.ts");
  const file = writeConfig({ version: 2, slots: [{ key_name: "a", vault_url: VAULT, pin: "1234" }] });
  const original = process.stderr.write.bind(process.stderr);
  let captured = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    captured += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    load(file);
    t.is(captured, "", "nothing without AZURE_KEYVAULT_PKCS11_DEBUG");
    setDebug(true);
    t.is(load(file).slots[0]!.keyName, "a");
  } finally {
    setDebug(false);
    process.stderr.write = original;
  }
  t.regex(captured, /ignoring unknown field 'version'/);
  t.regex(captured, /ignoring unknown field 'slots\[0\]\.pin'/);
  t.regex(captured, /Attempting to load config from path: .*config\.json/);
});

test("certificate_path: a PEM chain gives the key's certificate and the CA certificates in file order; too many is an error", async (t) => {
  const dir = tempDir();
  const [leaf, intermediate, root] = await Promise.all(["leaf", "intermediate", "root"].map((name) => selfSignedCertificate(name)));
  writeFileSync(path.join(dir, "chain.pem"), `${leaf!.pem}\n${intermediate!.pem}\n${root!.pem}\n`);
  const file = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate_path: "chain.pem" }] }, dir);
  const [slot] = load(file).slots;
  t.deepEqual(slot!.certificateDer, leaf!.der);
  t.deepEqual(slot!.certificateChainDer, [intermediate!.der, root!.der]);

  const single = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate: leaf!.der.toString("base64") }] });
  t.is(load(single).slots[0]!.certificateChainDer, undefined);

  const tooMany = tempDir();
  writeFileSync(path.join(tooMany, "long.pem"), Array.from({ length: 15 }, () => leaf!.pem).join("\n"));
  const long = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate_path: "long.pem" }] }, tooMany);
  expectConfigError(t, () => load(long), long, "slots[0].certificate_path", /holds 15 certificates; a token shows the key's and at most 13 CA certificates/);

  const broken = tempDir();
  writeFileSync(path.join(broken, "broken.pem"), `${leaf!.pem}\n-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n`);
  const brokenFile = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, certificate_path: "broken.pem" }] }, broken);
  expectConfigError(t, () => load(brokenFile), brokenFile, "slots[0].certificate_path", /certificate 2 in .*broken\.pem is not a valid X\.509 certificate/);
});

test("a slot with vault_url and no key_name is a vault token, labelled by its label or the vault's name", (t) => {
  const config = loadConfig({
    AZURE_KEYVAULT_PKCS11_CONFIG: writeConfig({ slots: [{ vault_url: "https://team-keys.vault.azure.net/" }, { vault_url: VAULT, label: "signing", hsm: true }, { key_name: "one", vault_url: VAULT }] }),
    HOME: "/nonexistent-home",
  });
  t.deepEqual(config.slots[0], { kind: "vault", label: "team-keys", vaultUrl: "https://team-keys.vault.azure.net", hsm: false });
  t.deepEqual(config.slots[1], { kind: "vault", label: "signing", vaultUrl: VAULT, hsm: true });
  t.is(config.slots[2]!.kind, "key");
});

test("per-key fields on a vault token, and hsm on a per-key slot, are refused with the field", (t) => {
  const versioned = writeConfig({ slots: [{ vault_url: VAULT, key_version: "0123456789abcdef" }] });
  expectConfigError(t, () => load(versioned), versioned, "slots[0].key_version", /applies to one key: set key_name too/);
  const certified = writeConfig({ slots: [{ vault_url: VAULT, certificate: "AA==" }] });
  expectConfigError(t, () => load(certified), certified, "slots[0].certificate", /applies to one key/);
  const hsm = writeConfig({ slots: [{ key_name: "a", vault_url: VAULT, hsm: true }] });
  expectConfigError(t, () => load(hsm), hsm, "slots[0].hsm", /applies to vault tokens/);
  const notBoolean = writeConfig({ slots: [{ vault_url: VAULT, hsm: "yes" }] });
  expectConfigError(t, () => load(notBoolean), notBoolean, "slots[0].hsm", /must be a boolean, not a string/);
});
