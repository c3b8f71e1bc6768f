// Secrets: set, get (latest and by version), list with paging, soft delete, deleted secrets, recover and purge,
// through raw HTTPS (the project has no SecretClient) with the REST shapes of secrets.json; a certificate's own
// secret shows as managed and cannot be overwritten.
import test from "ava";
import { X509Certificate } from "node:crypto";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { dataPlane, managedIdentityToken, type RawResponse } from "./raw.ts";

let emulator: TestEmulator;
let token: string;

test.before(async () => {
  emulator = await startTestEmulator({ keys: "signer:RSA:2048", certs: ["signer"] });
  token = await managedIdentityToken(emulator);
});
test.after.always(() => emulator?.close());

// The emulator is started in test.before; the client reads it (and the token) at each call.
const client = () => dataPlane(emulator, () => token);
const call = (method: string, path: string, body?: object): Promise<RawResponse> => client().call(method, path, body);
const listAll = (path: string) => client().listAll(path);

test("set returns a SecretBundle; get by name and by version returns what was set", async (t) => {
  const first = await call("PUT", "/secrets/p11-cert-signer2", { value: "MIIB", contentType: "application/pkix-cert", tags: { p11_cert_key: "signer2" } });
  t.is(first.status, 200, first.text);
  t.is(first.json.value, "MIIB");
  t.is(first.json.contentType, "application/pkix-cert");
  t.deepEqual(first.json.tags, { p11_cert_key: "signer2" });
  t.regex(first.json.id, new RegExp(`^${emulator.url}/secrets/p11-cert-signer2/[0-9a-f]{32}$`));
  t.true(first.json.attributes.enabled);
  t.is(first.json.attributes.recoveryLevel, "Recoverable+Purgeable");
  const second = await call("PUT", "/secrets/p11-cert-signer2", { value: "MIIC", contentType: "application/pkix-cert" });
  t.not(second.json.id, first.json.id);
  t.is((await call("GET", "/secrets/p11-cert-signer2")).json.value, "MIIC");
  t.is((await call("GET", "/secrets/P11-CERT-SIGNER2")).json.value, "MIIC", "names are case-insensitive");
  const version = first.json.id.split("/").pop();
  t.is((await call("GET", `/secrets/p11-cert-signer2/${version}`)).json.value, "MIIB");
  const versions = await listAll("/secrets/p11-cert-signer2/versions");
  t.deepEqual(versions.map((v) => v.id).sort(), [first.json.id, second.json.id].sort());
  t.false("value" in versions[0]!, "items carry no value");
});

test("a missing secret or version is 404 SecretNotFound; a bad body is 400", async (t) => {
  const missing = await call("GET", "/secrets/no-such-secret");
  t.is(missing.status, 404);
  t.is(missing.json.error.code, "SecretNotFound");
  t.regex(missing.json.error.message, /^A secret with \(name\/id\) no-such-secret was not found in this key vault/);
  t.is((await call("GET", "/secrets/no-such-secret/0123456789abcdef0123456789abcdef")).status, 404);
  t.is((await call("PUT", "/secrets/bad", { contentType: "x" })).status, 400, "value is required");
  t.is((await call("PUT", "/secrets/bad", { value: 5 })).status, 400);
  t.is((await call("PUT", "/secrets/bad_name", { value: "x" })).status, 400);
});

test("listing carries id, contentType, tags, attributes and no value, pages 25 at a time, and shows certificates' secrets as managed", async (t) => {
  for (let i = 0; i < 27; i++) {
    const res = await call("PUT", `/secrets/list-${String(i).padStart(2, "0")}`, { value: `v${i}`, contentType: "text/plain", tags: { n: String(i) } });
    t.is(res.status, 200);
  }
  const first = await call("GET", "/secrets");
  t.is(first.json.value.length, 25);
  t.regex(first.json.nextLink, /\/secrets\?api-version=2025-07-01&\$skiptoken=[A-Za-z0-9_-]+&maxresults=25$/);
  const items = await listAll("/secrets");
  t.is(new Set(items.map((i) => i.id)).size, items.length);
  const item = items.find((i) => i.id === `${emulator.url}/secrets/list-03`)!;
  t.deepEqual(item.tags, { n: "3" });
  t.is(item.contentType, "text/plain");
  t.true(item.attributes.enabled);
  t.false("value" in item);
  t.is(item.managed, undefined);
  const managed = items.find((i) => i.id === `${emulator.url}/secrets/signer`)!;
  t.true(managed.managed);
});

test("a certificate's secret is its sid, managed, and cannot be set or deleted", async (t) => {
  const certificate = await call("GET", "/certificates/signer");
  const secret = await call("GET", new URL(certificate.json.sid).pathname);
  t.is(secret.status, 200, secret.text);
  t.true(secret.json.managed);
  t.is(secret.json.id, certificate.json.sid);
  t.is(secret.json.kid, certificate.json.kid);
  t.is(new X509Certificate(secret.json.value).raw.toString("base64"), certificate.json.cer);
  t.is((await call("PUT", "/secrets/signer", { value: "x" })).status, 409);
  t.is((await call("DELETE", "/secrets/signer")).status, 409);
  t.is((await call("GET", "/certificates/signer")).status, 200);
});

test("delete is soft: deleted secrets list it, recover brings it back, purge frees the name; a deleted name is 409", async (t) => {
  await call("PUT", "/secrets/doomed", { value: "bye", tags: { a: "b" } });
  const deleted = await call("DELETE", "/secrets/doomed");
  t.is(deleted.status, 200);
  t.is(deleted.json.recoveryId, `${emulator.url}/deletedsecrets/doomed`);
  t.is(typeof deleted.json.deletedDate, "number");
  t.is(typeof deleted.json.scheduledPurgeDate, "number");
  t.deepEqual(deleted.json.tags, { a: "b" });
  t.is((await call("GET", "/secrets/doomed")).status, 404);
  const conflict = await call("PUT", "/secrets/doomed", { value: "again" });
  t.is(conflict.status, 409);
  t.is(conflict.json.error.code, "Conflict");
  t.is((await call("GET", "/deletedsecrets/doomed")).json.recoveryId, `${emulator.url}/deletedsecrets/doomed`);
  t.true((await listAll("/deletedsecrets")).some((i) => i.recoveryId === `${emulator.url}/deletedsecrets/doomed`));

  const recovered = await call("POST", "/deletedsecrets/doomed/recover");
  t.is(recovered.status, 200);
  t.is(recovered.json.value, "bye");
  t.is((await call("GET", "/secrets/doomed")).json.value, "bye");
  t.is((await call("GET", "/deletedsecrets/doomed")).status, 404);

  t.is((await call("DELETE", "/secrets/doomed")).status, 200);
  t.is((await call("DELETE", "/deletedsecrets/doomed")).status, 204);
  t.is((await call("GET", "/deletedsecrets/doomed")).status, 404);
  t.is((await call("PUT", "/secrets/doomed", { value: "new" })).status, 200, "a purged name is free again");
});

test("secret operations are counted under their own names", async (t) => {
  const before = emulator.requestCounts("counted");
  await call("PUT", "/secrets/counted", { value: "1" });
  await call("GET", "/secrets/counted");
  await call("DELETE", "/secrets/counted");
  await call("GET", "/deletedsecrets/counted");
  await call("POST", "/deletedsecrets/counted/recover");
  const after = emulator.requestCounts("counted");
  t.deepEqual(before, {});
  t.deepEqual(after, { "set-secret": 1, "get-secret": 1, "delete-secret": 1, "get-deleted-secret": 1, "recover-deleted-secret": 1 });
});
