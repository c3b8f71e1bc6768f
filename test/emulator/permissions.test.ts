// Denied permissions: the option at start-up and setPermissions() at run time refuse exactly the named permissions
// with the service's 403 ForbiddenByPolicy, naming the caller from its token; everything else keeps working.
import test from "ava";
import { createHash } from "node:crypto";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { startEmulator } from "../../src/emulator/index.ts";
import { startTestEmulator, type TestEmulator } from "../fixtures/emulator.ts";
import { managedIdentityToken, raw, type RawResponse } from "./raw.ts";

let emulator: TestEmulator;
let token: string;

test.before(async () => {
  emulator = await startTestEmulator({ keys: "signer:EC:P-256,victim:EC:P-256", deny: ["keys/create", "keys/delete"] });
  token = await managedIdentityToken(emulator);
});
test.after.always(() => emulator?.close());

function call(method: string, path: string, body?: object): Promise<RawResponse> {
  return raw(`${emulator.url}${path}?api-version=2025-07-01`, { method, ca: emulator.caPem, headers: { authorization: `Bearer ${token}` }, body });
}

const claims = (jwt: string): { appid: string; oid: string; iss: string } => JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString("utf8"));

test.serial("a denied permission is 403 Forbidden / ForbiddenByPolicy with the caller and the permission in the message", async (t) => {
  const res = await call("POST", "/keys/new-key/create", { kty: "EC", crv: "P-256" });
  t.is(res.status, 403);
  t.is(res.json.error.code, "Forbidden");
  t.is(res.json.error.innererror.code, "ForbiddenByPolicy");
  const { appid, oid, iss } = claims(token);
  t.is(
    res.json.error.message,
    `The user, group or application 'appid=${appid};oid=${oid};iss=${iss}' does not have keys create permission on key vault 'emulator;location=emulator'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287`,
  );
  t.is((await call("GET", "/keys/new-key")).status, 404, "nothing was created");
  t.is((await call("DELETE", "/keys/victim")).status, 403);
  t.is((await call("GET", "/keys/victim")).status, 200, "nothing was deleted");
});

test.serial("what is not denied still works, signing included (a least-privilege role)", async (t) => {
  const keys = new KeyClient(emulator.url, emulator.credential(), emulator.clientOptions);
  const key = await keys.getKey("signer");
  const crypto = new CryptographyClient(key.id!, emulator.credential(), emulator.clientOptions);
  const signed = await crypto.sign("ES256", createHash("sha256").update("x").digest());
  t.is(signed.result.length, 64);
  t.is((await call("PUT", "/secrets/allowed", { value: "v" })).status, 200);
});

test.serial("setPermissions replaces the deny list at run time; [] clears it; an unknown name throws and changes nothing", async (t) => {
  emulator.setPermissions(["secrets/set", "keys/list", "keys/import", "keys/update", "secrets/delete"]);
  t.is((await call("PUT", "/secrets/refused", { value: "v" })).json.error.message.includes("does not have secrets set permission"), true);
  t.is((await call("GET", "/keys")).status, 403);
  t.is((await call("PATCH", "/keys/signer/", { tags: { a: "b" } })).status, 403);
  t.is((await call("DELETE", "/secrets/allowed")).status, 403);
  const imported = await call("PUT", "/keys/imported", { key: { kty: "EC" } });
  t.is(imported.status, 403, "permission is checked before the body");
  t.is((await call("POST", "/keys/now-allowed/create", { kty: "EC", crv: "P-256" })).status, 200, "keys/create is no longer denied");

  t.throws(() => emulator.setPermissions(["keys/teleport"]), { message: /unknown permission\(s\) 'keys\/teleport'/ });
  t.is((await call("GET", "/keys")).status, 403, "the failed call left the deny list as it was");
  emulator.setPermissions([]);
  t.is((await call("GET", "/keys")).status, 200);
  t.is((await call("PUT", "/secrets/refused", { value: "v" })).status, 200);
});

test("an unknown permission in the start-up options is refused", async (t) => {
  await t.throwsAsync(startEmulator({ deny: ["keys/create", "key/create"] }), { message: /unknown permission\(s\) 'key\/create'/ });
});
