// Vault tokens and per-key slots on a Managed HSM that its host name does not reveal (the emulator's Managed HSM
// personality on 127.0.0.1, as a private endpoint would be): the token learns what the service is from its
// authentication challenge, makes -HSM keys whatever the template's slot was told, and stores no certificates.
import test from "ava";
import { execFileSync } from "node:child_process";
import { randomBytes, verify } from "node:crypto";
import path from "node:path";
import pkcs11js from "pkcs11js";
import { CKR } from "../../src/pkcs11/constants.ts";
import { API, findObjects, publicKeyFromJwk, rvOf, startModuleFixture, type ModuleFixture, type VaultJwk } from "./harness.ts";

let fixture: ModuleFixture;
let vaultSlot: Buffer;
let emptySlot: Buffer;
const P256 = Buffer.from("06082a8648ce3d030107", "hex");

test.before(async () => {
  fixture = await startModuleFixture({ keys: "hsm-ec:EC-HSM:P-256", managedHsm: true, extraSlots: [{ label: "hsm" }, { key_name: "hsm-later", label: "hsm-later" }] });
  const slots = fixture.pkcs11.C_GetSlotList(true);
  vaultSlot = slots[1]!;
  emptySlot = slots[2]!;
});
test.after.always(() => fixture?.close());

function generate(slot: Buffer, label: string) {
  const session = fixture.pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  const pair = fixture.pkcs11.C_GenerateKeyPair(session, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, [{ type: pkcs11js.CKA_EC_PARAMS, value: P256 }, { type: pkcs11js.CKA_LABEL, value: label }], [{ type: pkcs11js.CKA_LABEL, value: label }, { type: pkcs11js.CKA_SIGN, value: true }]);
  return { session, ...pair };
}

async function kty(name: string): Promise<{ kty: string; jwk: VaultJwk }> {
  const response = await fixture.vaultGet(`/keys/${name}?${API}`);
  if (response.status !== 200) throw new Error(`GET ${name}: ${response.status}`);
  const jwk = (response.body as { key: VaultJwk }).key;
  return { kty: jwk.kty, jwk };
}

test.serial("a vault token on a Managed HSM makes EC-HSM keys, shows the model Managed HSM, and the key signs", async (t) => {
  const { session, privateKey } = generate(vaultSlot, "hsm-made");
  const made = await kty("hsm-made");
  t.is(made.kty, "EC-HSM");
  t.is(fixture.pkcs11.C_GetTokenInfo(vaultSlot).model.trim(), "Managed HSM");
  const data = randomBytes(40);
  fixture.pkcs11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA_SHA256 }, privateKey);
  const signature = fixture.pkcs11.C_Sign(session, data, Buffer.alloc(64));
  t.true(verify("sha256", data, { key: publicKeyFromJwk(made.jwk), dsaEncoding: "ieee-p1363" }, signature));
  // Managed HSM has no secrets, so a certificate cannot be stored there.
  const certificate = execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path.join(fixture.dir, "any.key"), "-subj", "/CN=any", "-days", "1", "-outform", "DER"]);
  t.is(rvOf(() => fixture.pkcs11.C_CreateObject(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }, { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 }, { type: pkcs11js.CKA_VALUE, value: certificate }])), CKR.TEMPLATE_INCONSISTENT);
  fixture.pkcs11.C_CloseSession(session);
});

test.serial("an empty per-key slot on a Managed HSM is filled with an EC-HSM key under its key_name", async (t) => {
  const { session } = generate(emptySlot, "ignored-label");
  t.is((await kty("hsm-later")).kty, "EC-HSM");
  t.is(fixture.pkcs11.C_GetTokenInfo(emptySlot).model.trim(), "Managed HSM");
  t.is(findObjects(fixture.pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }]).length, 1);
  fixture.pkcs11.C_CloseSession(session);
});
