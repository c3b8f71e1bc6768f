// Certificates this module stores in Key Vault secrets (docs/vault-tokens.md), and the service's 403 refusals of
// every write: against the emulator over HTTPS, checked through the vault's own REST answers.
import { X509Certificate } from "node:crypto";
import test from "ava";
import { createCredential } from "../../src/auth/index.ts";
import { createVaultBackend, VaultError, type VaultBackend } from "../../src/vault/index.ts";
import { emulator, managedIdentityToken, moduleConfig, vaultRest, type RunningEmulator } from "./helpers.ts";

let emu: RunningEmulator;
let backend: VaultBackend;
let token: string;
/** DER of a real certificate: the emulator's self-signed one for "signer", read over REST. */
let der: Buffer;

test.before(async () => {
  emu = await emulator({ keys: "signer:RSA:2048,other:EC:P-256", certs: ["signer"] });
  token = await managedIdentityToken(emu);
  backend = createVaultBackend(moduleConfig(emu), { credential: createCredential({ AZURE_CLI_ACCESS_TOKEN: token, HOME: "/nonexistent" }) });
  der = Buffer.from((await vaultRest(emu, token, "GET", "/certificates/signer")).body.cer, "base64");
  new X509Certificate(der);
});

test.after.always(async () => {
  await backend?.close();
  await emu?.close();
});

test.serial("stored certificates: written as base64 DER secrets with our content type and tags; listed, read and soft-deleted", async (t) => {
  // Secrets that are not ours: untagged, tagged but of another content type; and the certificate's own secret.
  t.is((await vaultRest(emu, token, "PUT", "/secrets/foreign", { value: der.toString("base64"), contentType: "application/pkix-cert" })).status, 200);
  t.is((await vaultRest(emu, token, "PUT", "/secrets/p11-cert-lookalike", { value: "x", contentType: "text/plain", tags: { p11_cert_key: "other" } })).status, 200);

  await backend.storeCertificate(emu.url, "p11-cert-other", der, { p11_cert_key: "other" });
  await backend.storeCertificate(emu.url, "p11-ca-0123abcd", der, { p11_cert_authority: "1" });
  const rest = await vaultRest(emu, token, "GET", "/secrets/p11-cert-other");
  t.is(rest.status, 200);
  t.is(rest.body.value, der.toString("base64"));
  t.is(rest.body.contentType, "application/pkix-cert");
  t.deepEqual(rest.body.tags, { p11_cert_key: "other" });

  const listed = await backend.listStoredCertificates(emu.url);
  t.deepEqual(
    listed.sort((a, b) => a.name.localeCompare(b.name)),
    [
      { name: "p11-ca-0123abcd", tags: { p11_cert_authority: "1" } },
      { name: "p11-cert-other", keyName: "other", tags: { p11_cert_key: "other" } },
    ],
  );
  t.deepEqual(await backend.getStoredCertificate(emu.url, "p11-cert-other"), der);

  await backend.deleteStoredCertificate(emu.url, "p11-cert-other");
  t.is((await vaultRest(emu, token, "GET", "/secrets/p11-cert-other")).status, 404);
  t.is((await vaultRest(emu, token, "GET", "/deletedsecrets/p11-cert-other")).status, 200, "soft-deleted, recoverable");
  t.is(emu.requestCounts("p11-cert-other")["purge-deleted-secret"] ?? 0, 0);
  t.deepEqual((await backend.listStoredCertificates(emu.url)).map((entry) => entry.name), ["p11-ca-0123abcd"]);
});

test("getStoredCertificate: a missing one is not-found; a secret that holds no base64 DER certificate is refused", async (t) => {
  const missing = await t.throwsAsync(backend.getStoredCertificate(emu.url, "p11-cert-none"), { instanceOf: VaultError });
  t.is(missing?.kind, "not-found");
  await vaultRest(emu, token, "PUT", "/secrets/p11-cert-text", { value: "not a certificate", contentType: "text/plain", tags: { p11_cert_key: "x" } });
  const wrong = await t.throwsAsync(backend.getStoredCertificate(emu.url, "p11-cert-text"), { instanceOf: VaultError });
  t.is(wrong?.kind, "other");
  t.regex(wrong!.message, /does not hold a base64 DER certificate/);
});

test("storeCertificate on a soft-deleted secret's name: conflict", async (t) => {
  await backend.storeCertificate(emu.url, "p11-cert-gone", der, { p11_cert_key: "gone" });
  await backend.deleteStoredCertificate(emu.url, "p11-cert-gone");
  const error = await t.throwsAsync(backend.storeCertificate(emu.url, "p11-cert-gone", der, { p11_cert_key: "gone" }), { instanceOf: VaultError });
  t.is(error?.kind, "conflict");
});

const denials: Array<[string, string, (b: VaultBackend) => Promise<unknown>]> = [
  ["keys/create", "keys create", (b) => b.createKey(emu.url, "denied-create", { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: {} })],
  ["keys/import", "keys import", (b) => b.importKey(emu.url, "denied-import", { kty: "EC", crv: "P-256", x: Buffer.alloc(32, 1), y: Buffer.alloc(32, 2), d: Buffer.alloc(32, 3) }, { keyOps: ["sign"], tags: {} })],
  ["keys/update", "keys update", async (b) => b.updateKeyTags(await b.getKey(emu.url, "other"), { a: "b" })],
  ["keys/delete", "keys delete", (b) => b.deleteKey(emu.url, "other")],
  ["keys/list", "keys list", (b) => b.listKeys(emu.url)],
  ["keys/get", "keys get", (b) => b.createKey(emu.url, "unchecked", { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: {} })],
  ["secrets/set", "secrets set", (b) => b.storeCertificate(emu.url, "p11-cert-denied", der, { p11_cert_key: "other" })],
  ["secrets/delete", "secrets delete", (b) => b.deleteStoredCertificate(emu.url, "p11-ca-0123abcd")],
  ["secrets/list", "secrets list", (b) => b.listStoredCertificates(emu.url)],
];

for (const [permission, words, run] of denials) {
  test.serial(`a 403 for ${permission}: kind forbidden, the service's message names the missing permission`, async (t) => {
    emu.setPermissions([permission]);
    try {
      const error = await t.throwsAsync(run(backend), { instanceOf: VaultError });
      t.is(error?.kind, "forbidden");
      t.is(error?.statusCode, 403);
      t.true(error!.message.includes(`does not have ${words} permission on key vault`), error!.message);
    } finally {
      emu.setPermissions(undefined);
    }
    t.is((await vaultRest(emu, token, "GET", "/keys/other")).status, 200, "a refused delete deleted nothing");
  });
}
