// With no slots configured, C_Initialize lists every key in AZURE_KEYVAULT_URL (sorted by name) as a token.
import test from "ava";
import { verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { signOnce, startModuleFixture, type ModuleFixture } from "./harness.ts";

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "zeta:EC:P-256,alpha:RSA:2048,middle:EC:P-384", discover: true });
});
test.after.always(() => fixture?.close());

test("one token per vault key, labelled with the key name, each able to sign", (t) => {
  const { pkcs11 } = fixture;
  const slots = pkcs11.C_GetSlotList(true);
  t.deepEqual(
    slots.map((slot) => pkcs11.C_GetTokenInfo(slot).label.trim()),
    ["alpha", "middle", "zeta"],
  );
  const data = Buffer.from("discovered");
  const signature = signOnce(fixture, "middle", { mechanism: pkcs11js.CKM_ECDSA_SHA384 }, data);
  t.true(verify("sha384", data, { key: fixture.key("middle").publicKey, dsaEncoding: "ieee-p1363" }, signature));
});
