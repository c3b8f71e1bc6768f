// The module loaded inside a Node process through pkcs11js (whose async API runs each call on a libuv worker
// thread), talking to the fake helper: many calls in flight at once, each answered to its own caller.
import test from "ava";
import pkcs11js from "pkcs11js";
import { fakeHelperPath, modulePath } from "./driver.ts";

const CKA_VALUE = 0x11;
const CKM_ECDSA = 0x1041;

/** pkcs11js passes handles as native CK_ULONG buffers. */
function handle(value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  return b;
}

test("concurrent C_SignAsync calls through pkcs11js each get their own reply", async (t) => {
  process.env.AZURE_KEYVAULT_PKCS11_HELPER = fakeHelperPath;
  const p11 = new pkcs11js.PKCS11();
  p11.load(modulePath);
  p11.C_Initialize();
  try {
    const slots = p11.C_GetSlotList(true);
    t.is(slots.length, 3);
    const session = p11.C_OpenSession(slots[0]!, pkcs11js.CKF_SERIAL_SESSION);
    p11.C_SignInit(session, { mechanism: CKM_ECDSA }, handle(1));
    const inputs = Array.from({ length: 16 }, (_, i) => Buffer.from(`sleep:${20 + (i % 4) * 10} signer ${i}`));
    const outputs = await Promise.all(inputs.map((data) => p11.C_SignAsync(session, data, Buffer.alloc(128))));
    t.deepEqual(outputs.map((b) => b.toString()), inputs.map((b) => b.toString()));

    const [report] = p11.C_GetAttributeValue(session, handle(99), [{ type: CKA_VALUE }]);
    const { maxInFlight } = JSON.parse(report?.value?.toString() ?? "{}") as { maxInFlight: number };
    t.true(maxInFlight > 1, `the helper saw at most ${maxInFlight} request(s) at once`);
  } finally {
    p11.C_Finalize();
    p11.close();
  }
});
