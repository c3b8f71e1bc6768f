// `azure-keyvault-pkcs11 list --json` against what PKCS#11 clients see through the module: pkcs11-tool -O (labels,
// ids, classes, counts per token) and p11tool (the RFC 7512 URIs it prints for the same objects), and the ids
// against the vault's own JWKs.
import test from "ava";
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { modulePath, repoRoot, startModuleFixture, type ModuleFixture } from "../module/harness.ts";
import { describe, run } from "../clients/process.ts";
import type { ListedToken } from "../../src/doctor/list.ts";

const cli = path.join(repoRoot, "build", "cli.cjs");
let fixture: ModuleFixture;
let env: NodeJS.ProcessEnv;
const labels: Record<string, string> = { rsa: "rsa token-1", ec: "ec.p384" };

test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa:RSA:3072,ec:EC:P-384", certs: ["rsa"], skipInitialize: true });
  const configPath = path.join(fixture.dir, "list-config.json");
  const slots = Object.entries(labels).map(([name, label]) => ({ key_name: name, label, vault_url: fixture.emulator.url }));
  await writeFile(configPath, JSON.stringify({ slots }));
  env = { ...process.env, AZURE_KEYVAULT_PKCS11_CONFIG: configPath };
});
test.after.always(() => fixture?.close());

async function list(extraEnv: NodeJS.ProcessEnv = {}): Promise<{ tokens: ListedToken[]; code: number | null; text: string }> {
  const result = await run(process.execPath, [cli, "list", "--json"], { env: { ...env, ...extraEnv } });
  try {
    return { tokens: (JSON.parse(result.stdout) as { tokens: ListedToken[] }).tokens, code: result.code, text: describe(result) };
  } catch {
    throw new Error(`list --json printed no JSON\n${describe(result)}`);
  }
}

interface ToolObject {
  class: string;
  label: string;
  id: string;
}

/** The objects of `pkcs11-tool -O` output: "Private Key Object; RSA", then indented "label:" and "ID:" lines. */
function parsePkcs11ToolObjects(stdout: string): ToolObject[] {
  const classes: Record<string, string> = { "Private Key Object": "CKO_PRIVATE_KEY", "Public Key Object": "CKO_PUBLIC_KEY", "Certificate Object": "CKO_CERTIFICATE" };
  const objects: ToolObject[] = [];
  for (const block of stdout.split(/^(?=(?:Private Key|Public Key|Certificate) Object)/m)) {
    const kind = /^(Private Key Object|Public Key Object|Certificate Object)/.exec(block)?.[1];
    if (!kind) continue;
    objects.push({ class: classes[kind]!, label: /^\s*label:\s*(.*)$/m.exec(block)?.[1]?.trim() ?? "", id: /^\s*ID:\s*([0-9a-f]+)$/m.exec(block)?.[1] ?? "" });
  }
  return objects;
}

const byKey = (a: ToolObject, b: ToolObject): number => `${a.class}${a.label}${a.id}`.localeCompare(`${b.class}${b.label}${b.id}`);

test("list --json shows the tokens and objects pkcs11-tool -O shows through the module", async (t) => {
  const { tokens, code, text } = await list();
  t.is(code, 0, text);
  t.deepEqual(
    tokens.map((token) => token.label),
    Object.values(labels),
    text,
  );
  for (const token of tokens) {
    const tool = await run("pkcs11-tool", ["--module", modulePath, "--token-label", token.label, "-O"], { env });
    t.is(tool.code, 0, describe(tool));
    const seen = parsePkcs11ToolObjects(tool.stdout);
    t.true(seen.length >= 2, describe(tool));
    t.deepEqual(token.objects.map(({ class: objectClass, label, id }) => ({ class: objectClass, label, id })).sort(byKey), seen.sort(byKey), describe(tool));
  }
  // rsa has its vault certificate, ec has none.
  t.is(tokens[0]!.objects.length, 3);
  t.is(tokens[1]!.objects.length, 2);
});

test("ids are the SHA-1 of the vault key's public key bits; sizes are the vault's", async (t) => {
  const { tokens } = await list();
  for (const [index, name] of Object.keys(labels).entries()) {
    const key = fixture.key(name);
    // subjectPublicKey: RSAPublicKey DER for RSA, the uncompressed point 04||x||y for EC (RFC 5280 4.2.1.2, method 1).
    const bits =
      name === "rsa"
        ? key.publicKey.export({ type: "pkcs1", format: "der" })
        : Buffer.concat([Buffer.from([4]), Buffer.from(key.jwk.x!, "base64url"), Buffer.from(key.jwk.y!, "base64url")]);
    const id = createHash("sha1").update(bits).digest("hex");
    const objects = tokens[index]!.objects;
    t.is(objects.filter((object) => object.keyType).length, 2);
    for (const object of objects) {
      t.is(object.id, id, `${name} ${object.class}`);
      if (!object.keyType) continue;
      if (name === "rsa") t.is(object.keyBits, Buffer.from(key.jwk.n!, "base64url").length * 8);
      else t.is(object.curve, "P-384");
    }
  }
});

test("the URIs are the ones p11tool prints for the same objects", async (t) => {
  const { tokens } = await list();
  for (const token of tokens) {
    const tool = await run("p11tool", ["--provider", modulePath, "--list-all", `pkcs11:token=${encodeURIComponent(token.label)}`], { env });
    t.is(tool.code, 0, describe(tool));
    const urls = [...tool.stdout.matchAll(/^\s*URL:\s*(\S+)$/gm)].map((match) => match[1]!).sort();
    t.deepEqual(token.objects.map((object) => object.uri).sort(), urls, describe(tool));
    const tokens2 = await run("p11tool", ["--provider", modulePath, "--list-tokens"], { env });
    t.true(tokens2.stdout.includes(`URL: ${token.uri}\n`), describe(tokens2));
  }
});

test("a key the vault does not have: the token is listed with the reason, and the exit status is 1", async (t) => {
  const configPath = path.join(fixture.dir, "list-missing.json");
  await writeFile(configPath, JSON.stringify({ slots: [{ key_name: "no-such-key", label: "missing", vault_url: fixture.emulator.url }] }));
  const { tokens, code, text } = await list({ AZURE_KEYVAULT_PKCS11_CONFIG: configPath });
  t.is(code, 1, text);
  t.is(tokens.length, 1);
  t.deepEqual(tokens[0]!.objects, []);
  t.regex(tokens[0]!.error ?? "", /the vault has no key 'no-such-key': the token is empty until C_GenerateKeyPair creates it/);
});

test("a vault token lists every key of the vault, with the same ids as the per-key slots", async (t) => {
  const configPath = path.join(fixture.dir, "list-vault.json");
  await writeFile(configPath, JSON.stringify({ slots: [{ vault_url: fixture.emulator.url, label: "whole vault" }] }));
  const { tokens, code, text } = await list({ AZURE_KEYVAULT_PKCS11_CONFIG: configPath });
  t.is(code, 0, text);
  t.is(tokens.length, 1);
  const objects = tokens[0]!.objects;
  t.deepEqual(objects.map((object) => `${object.class} ${object.label}`).sort(), ["CKO_CERTIFICATE rsa", "CKO_PRIVATE_KEY ec", "CKO_PRIVATE_KEY rsa", "CKO_PUBLIC_KEY ec", "CKO_PUBLIC_KEY rsa"]);
  const { tokens: perKey } = await list();
  for (const object of objects) {
    const same = perKey.flatMap((token) => token.objects).find((other) => other.class === object.class && other.id === object.id);
    t.truthy(same, `${object.class} ${object.label} has the id its per-key slot shows`);
  }
});
