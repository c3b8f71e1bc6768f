// C_GetAttributeValue's per-attribute rules (PKCS#11 v2.40 §5.7), on the attribute store directly: pkcs11js always
// sizes its buffers itself, so the too-small and mixed cases cannot be driven through it.
import test from "ava";
import { AttributeSet, encodeDate, encodeUlong } from "../../src/token/attributes.ts";
import { CK_UNAVAILABLE_INFORMATION, CKA, CKR } from "../../src/pkcs11/constants.ts";

const store = new AttributeSet(8).ulong(CKA.CLASS, 3).text(CKA.LABEL, "key").bool(CKA.SIGN, true).sensitive(CKA.PRIVATE_EXPONENT).empty(CKA.SUBJECT);

test("length query, copy, too small, sensitive and invalid, each answered per attribute", (t) => {
  const { rv, answers } = store.read([
    { type: CKA.CLASS, present: false, capacity: 0 },
    { type: CKA.LABEL, present: true, capacity: 3 },
    { type: CKA.LABEL, present: true, capacity: 2 },
    { type: CKA.PRIVATE_EXPONENT, present: true, capacity: 512 },
    { type: 0x7fff0001, present: true, capacity: 8 },
    { type: CKA.SUBJECT, present: true, capacity: 0 },
  ]);
  t.is(rv, CKR.ATTRIBUTE_SENSITIVE);
  t.deepEqual(answers, [
    { length: 8 },
    { length: 3, value: Buffer.from("key") },
    { length: CK_UNAVAILABLE_INFORMATION },
    { length: CK_UNAVAILABLE_INFORMATION },
    { length: CK_UNAVAILABLE_INFORMATION },
    { length: 0, value: Buffer.alloc(0) },
  ]);
});

test("the rv precedence is sensitive, then type invalid, then buffer too small", (t) => {
  t.is(store.read([{ type: 0x7fff0001, present: false, capacity: 0 }, { type: CKA.LABEL, present: true, capacity: 1 }]).rv, CKR.ATTRIBUTE_TYPE_INVALID);
  t.is(store.read([{ type: CKA.LABEL, present: true, capacity: 1 }]).rv, CKR.BUFFER_TOO_SMALL);
  t.is(store.read([{ type: CKA.SIGN, present: true, capacity: 1 }]).rv, CKR.OK);
});

test("templates match byte-for-byte, never on sensitive or unknown attributes", (t) => {
  t.true(store.matches([]));
  t.true(store.matches([{ type: CKA.CLASS, value: encodeUlong(3, 8) }, { type: CKA.SIGN, value: Buffer.from([1]) }]));
  t.false(store.matches([{ type: CKA.CLASS, value: encodeUlong(3, 4) }]));
  t.false(store.matches([{ type: CKA.PRIVATE_EXPONENT, value: Buffer.alloc(0) }]));
  t.false(store.matches([{ type: 0x7fff0001, value: Buffer.alloc(0) }]));
});

test("CK_ULONG values follow the host's size; dates are YYYYMMDD or empty", (t) => {
  t.deepEqual(new AttributeSet(4).ulong(CKA.CLASS, 3).get(CKA.CLASS), Buffer.from([3, 0, 0, 0]));
  t.deepEqual(encodeUlong(CK_UNAVAILABLE_INFORMATION, 8), Buffer.alloc(8, 0xff));
  t.is(encodeDate(new Date(Date.UTC(2031, 0, 9))).toString(), "20310109");
  t.is(encodeDate(undefined).length, 0);
});
