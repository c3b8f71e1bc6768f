// The shim's buffer rules (docs/protocol.md "What the shim writes back"), argument checks and locally answered
// functions, driven through the C ABI against the fake helper.
import test from "ava";
import { UNAVAILABLE, onlyDriverLines, runDriver, rv } from "./driver.ts";

test("length queries, CKR_BUFFER_TOO_SMALL and NULL-pointer checks follow the protocol", async (t) => {
  const run = await runDriver("basic");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("done"), "1", run.stdout);

  // Before C_Initialize.
  t.is(v.get("pre.GetInfo"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("pre.Finalize"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("pre.InitToken"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("pre.GetFunctionStatus"), rv.CRYPTOKI_NOT_INITIALIZED);

  // Structs are copied on CKR_OK; a NULL struct pointer never reaches the helper.
  t.is(v.get("GetInfo"), rv.OK);
  t.is(v.get("GetInfo.manufacturer"), `${"Fake Manufacturer".padEnd(32, " ")}|`);
  t.is(v.get("GetInfo.cryptoki"), "2.40");
  t.is(v.get("GetInfo.null"), rv.ARGUMENTS_BAD);

  // Slot list: query, too small (count written, entries not), full, NULL count.
  t.is(v.get("slots.query"), rv.OK);
  t.is(v.get("slots.query.count"), "3");
  t.is(v.get("slots.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("slots.small.count"), "3");
  t.is(v.get("slots.small.first"), "0");
  t.is(v.get("slots.full"), rv.OK);
  t.is(v.get("slots.full.count"), "3");
  t.is(v.get("slots.full.ids"), "10,11,12");
  t.is(v.get("slots.nullCount"), rv.ARGUMENTS_BAD);

  t.is(v.get("OpenSession"), rv.OK);
  t.is(v.get("OpenSession.handle"), "1");
  t.is(v.get("OpenSession.null"), rv.ARGUMENTS_BAD);

  // C_GetAttributeValue, per attribute.
  t.is(v.get("attr.query"), rv.OK);
  t.is(v.get("attr.query.lengths"), "10,4");
  t.is(v.get("attr.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("attr.small.labelLen"), UNAVAILABLE);
  t.is(v.get("attr.small.idLen"), "4");
  t.is(v.get("attr.small.id"), "1,2,3,4");
  t.is(v.get("attr.sensitive"), rv.ATTRIBUTE_SENSITIVE);
  t.is(v.get("attr.sensitive.valueLen"), UNAVAILABLE);
  t.is(v.get("attr.sensitive.idLen"), "4");
  t.is(v.get("attr.unknown"), rv.ATTRIBUTE_TYPE_INVALID);
  t.is(v.get("attr.unknown.len"), UNAVAILABLE);
  t.is(v.get("attr.nullTemplate"), rv.ARGUMENTS_BAD);
  // A CK_ULONG value travels in the host's native layout.
  t.is(v.get("attr.class"), rv.OK);
  t.is(v.get("attr.class.value"), "3");

  // C_Sign: length query, too small (length written, buffer untouched), full, bad pointers.
  t.is(v.get("SignInit"), rv.OK);
  t.is(v.get("SignInit.nullMech"), rv.ARGUMENTS_BAD);
  t.is(v.get("sign.query"), rv.OK);
  t.is(v.get("sign.query.len"), String("hello, shim".length));
  t.is(v.get("sign.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("sign.small.len"), String("hello, shim".length));
  t.is(v.get("sign.small.untouched"), "1");
  t.is(v.get("sign.full"), rv.OK);
  t.is(v.get("sign.full.value"), "hello, shim");
  t.is(v.get("sign.nullLen"), rv.ARGUMENTS_BAD);
  t.is(v.get("sign.nullData"), rv.ARGUMENTS_BAD);

  // A malformed reply is CKR_DEVICE_ERROR with a log line, and the link keeps working.
  t.is(v.get("sign.garbage"), rv.DEVICE_ERROR);
  t.regex(run.stderr, /AZURE_KEYVAULT: C_Sign: protocol error/);
  t.is(v.get("sign.afterGarbage"), rv.OK);
  // A well-formed OUT with a byte after it: CKR_DEVICE_ERROR, and neither the length nor the data written.
  t.is(v.get("sign.trailing"), rv.DEVICE_ERROR);
  t.is(v.get("sign.trailing.len"), "64");
  t.is(v.get("sign.trailing.untouched"), "1");

  t.is(v.get("random"), rv.OK);
  t.is(v.get("random.last"), "0xab");

  // Answered by the shim.
  t.is(v.get("InitToken"), rv.FUNCTION_NOT_SUPPORTED);
  t.is(v.get("GetFunctionStatus"), rv.FUNCTION_NOT_PARALLEL);
  t.is(v.get("CancelFunction"), rv.FUNCTION_NOT_PARALLEL);
  t.is(v.get("WaitForSlotEvent"), rv.FUNCTION_NOT_SUPPORTED);

  t.is(v.get("Finalize.reserved"), rv.ARGUMENTS_BAD);
  t.is(v.get("Finalize"), rv.OK);
  t.is(v.get("post.GetInfo"), rv.CRYPTOKI_NOT_INITIALIZED);
  t.is(v.get("post.Finalize"), rv.CRYPTOKI_NOT_INITIALIZED);

  t.true(onlyDriverLines(run.stdout), run.stdout);
});

test("C_GetInterfaceList and C_GetInterface offer PKCS 11 3.0 and 2.40 without C_Initialize", async (t) => {
  const run = await runDriver("interfaces");
  t.is(run.status, 0, run.stderr);
  const v = run.values;
  t.is(v.get("done"), "1", run.stdout);
  t.is(v.get("list.query"), rv.OK);
  t.is(v.get("list.count"), "2");
  t.is(v.get("list.small"), rv.BUFFER_TOO_SMALL);
  t.is(v.get("list.full"), rv.OK);
  t.is(v.get("list.0"), "PKCS 11 3.0 flags=0");
  t.is(v.get("list.1"), "PKCS 11 2.40 flags=0");
  t.is(v.get("get.default"), rv.OK);
  t.is(v.get("get.default.version"), "3.0");
  t.is(v.get("get.v240"), rv.OK);
  t.is(v.get("get.v240.version"), "2.40");
  t.is(v.get("get.v240.sameAsGetFunctionList"), "1");
  t.is(v.get("get.unknownName"), rv.ARGUMENTS_BAD);
  // Not fork-safe: a forked child must call C_Initialize.
  t.is(v.get("get.forkSafe"), rv.ARGUMENTS_BAD);
  // The 3.0 table is the 2.40 table followed by the 3.0 functions in the OASIS order.
  t.is(v.get("table3.v2PartSame"), "1");
  t.is(v.get("table3.GetInterfaceList"), "1");
  t.is(v.get("table3.GetInterface"), "1");
  t.is(v.get("table3.LoginUser"), "1");
  t.is(v.get("table3.MessageVerifyFinal"), "1");
});
