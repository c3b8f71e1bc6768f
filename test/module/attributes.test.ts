// Object attributes checked against the vault's JWK and certificate (fetched from the emulator, not the module),
// plus the sensitive/invalid attribute rules and the refusal to modify or destroy token objects.
import test from "ava";
import { createHash, X509Certificate as NodeCertificate } from "node:crypto";
import { X509Certificate } from "@peculiar/x509";
import pkcs11js from "pkcs11js";
import { attribute, findOne, openSession, rvOf, startModuleFixture, type Handle, type ModuleFixture } from "./harness.ts";

const CKA_PUBLIC_KEY_INFO = 0x129;
const CKR_ACTION_PROHIBITED = 0x1b;

let fixture: ModuleFixture;
test.before(async () => {
  fixture = await startModuleFixture({ keys: "rsa:RSA:2048,ec:EC:P-384,k1:EC:P-256K", certs: ["rsa", "ec"] });
});
test.after.always(() => fixture?.close());

const objectOf = (session: Handle, objectClass: number): Handle => findOne(fixture.pkcs11, session, [{ type: pkcs11js.CKA_CLASS, value: objectClass }]);
const bool = (session: Handle, object: Handle, type: number): boolean => attribute(fixture.pkcs11, session, object, type).equals(Buffer.from([1]));
const ulong = (session: Handle, object: Handle, type: number): number => Number(attribute(fixture.pkcs11, session, object, type).readBigUInt64LE());

/** RFC 5280 key identifier: SHA-1 of the subjectPublicKey bits, computed with node's own encoders. */
function expectedId(keyName: string): Buffer {
  const key = fixture.key(keyName);
  if (key.jwk.kty.startsWith("RSA")) return createHash("sha1").update(key.publicKey.export({ type: "pkcs1", format: "der" })).digest();
  const x = Buffer.from(key.jwk.x!, "base64url");
  const y = Buffer.from(key.jwk.y!, "base64url");
  return createHash("sha1").update(Buffer.concat([Buffer.from([4]), x, y])).digest();
}

test("RSA key objects carry the JWK's modulus and exponent, and one CKA_ID and CKA_LABEL with the certificate", (t) => {
  const session = openSession(fixture, "rsa");
  const jwk = fixture.key("rsa").jwk;
  const privateKey = objectOf(session, pkcs11js.CKO_PRIVATE_KEY);
  const publicKey = objectOf(session, pkcs11js.CKO_PUBLIC_KEY);
  const certificate = objectOf(session, pkcs11js.CKO_CERTIFICATE);
  for (const object of [privateKey, publicKey]) {
    t.is(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_MODULUS).toString("base64url"), jwk.n!);
    t.is(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_PUBLIC_EXPONENT).toString("base64url"), jwk.e!);
    t.is(ulong(session, object, pkcs11js.CKA_MODULUS_BITS), 2048);
    t.is(ulong(session, object, pkcs11js.CKA_KEY_TYPE), pkcs11js.CKK_RSA);
    t.deepEqual(attribute(fixture.pkcs11, session, object, CKA_PUBLIC_KEY_INFO), fixture.key("rsa").publicKey.export({ type: "spki", format: "der" }));
  }
  for (const object of [privateKey, publicKey, certificate]) {
    t.deepEqual(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_ID), expectedId("rsa"));
    t.is(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_LABEL).toString(), "rsa");
    t.true(bool(session, object, pkcs11js.CKA_TOKEN));
    t.false(bool(session, object, pkcs11js.CKA_MODIFIABLE));
  }
  t.is(bool(session, privateKey, pkcs11js.CKA_SIGN), jwk.key_ops.includes("sign"));
  t.is(bool(session, privateKey, pkcs11js.CKA_DECRYPT), jwk.key_ops.includes("decrypt"));
  t.is(bool(session, privateKey, pkcs11js.CKA_UNWRAP), jwk.key_ops.includes("unwrapKey"));
  t.is(bool(session, publicKey, pkcs11js.CKA_VERIFY), jwk.key_ops.includes("verify"));
  t.is(bool(session, publicKey, pkcs11js.CKA_ENCRYPT), jwk.key_ops.includes("encrypt"));
  t.true(bool(session, privateKey, pkcs11js.CKA_SENSITIVE));
  t.true(bool(session, privateKey, pkcs11js.CKA_ALWAYS_SENSITIVE));
  t.true(bool(session, privateKey, pkcs11js.CKA_NEVER_EXTRACTABLE));
  t.false(bool(session, privateKey, pkcs11js.CKA_EXTRACTABLE));
  t.true(bool(session, privateKey, pkcs11js.CKA_PRIVATE));
  t.false(bool(session, publicKey, pkcs11js.CKA_PRIVATE));
  const allowed = attribute(fixture.pkcs11, session, privateKey, pkcs11js.CKA_ALLOWED_MECHANISMS);
  const mechanisms = Array.from({ length: allowed.length / 8 }, (_, i) => Number(allowed.readBigUInt64LE(i * 8)));
  t.true(mechanisms.includes(pkcs11js.CKM_SHA256_RSA_PKCS) && mechanisms.includes(pkcs11js.CKM_RSA_PKCS_PSS) && !mechanisms.includes(pkcs11js.CKM_ECDSA));
  fixture.pkcs11.C_CloseSession(session);
});

test("the certificate object serves the vault's certificate and its fields", (t) => {
  const session = openSession(fixture, "rsa");
  const der = fixture.key("rsa").certificateDer!;
  t.truthy(der);
  const certificate = objectOf(session, pkcs11js.CKO_CERTIFICATE);
  const parsed = new X509Certificate(der);
  t.deepEqual(attribute(fixture.pkcs11, session, certificate, pkcs11js.CKA_VALUE), der);
  t.deepEqual(attribute(fixture.pkcs11, session, certificate, pkcs11js.CKA_SUBJECT), Buffer.from(parsed.subjectName.toArrayBuffer()));
  t.deepEqual(attribute(fixture.pkcs11, session, certificate, pkcs11js.CKA_ISSUER), Buffer.from(parsed.issuerName.toArrayBuffer()));
  const serial = attribute(fixture.pkcs11, session, certificate, pkcs11js.CKA_SERIAL_NUMBER);
  t.is(serial[0], 0x02);
  t.is(BigInt(`0x${serial.subarray(2).toString("hex")}`), BigInt(`0x${new NodeCertificate(der).serialNumber}`));
  t.is(ulong(session, certificate, pkcs11js.CKA_CERTIFICATE_TYPE), pkcs11js.CKC_X_509);
  t.deepEqual(attribute(fixture.pkcs11, session, certificate, pkcs11js.CKA_CHECK_VALUE), createHash("sha1").update(der).digest().subarray(0, 3));
  // The keys' CKA_SUBJECT is the certificate's subject.
  t.deepEqual(attribute(fixture.pkcs11, session, objectOf(session, pkcs11js.CKO_PRIVATE_KEY), pkcs11js.CKA_SUBJECT), Buffer.from(parsed.subjectName.toArrayBuffer()));
  fixture.pkcs11.C_CloseSession(session);
});

for (const { name, oid } of [
  { name: "ec", oid: "06052b81040022" },
  { name: "k1", oid: "06052b8104000a" },
]) {
  test(`${name}: EC params are the curve's DER OID and EC point the DER OCTET STRING of the JWK's point`, (t) => {
    const session = openSession(fixture, name);
    const jwk = fixture.key(name).jwk;
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
    for (const objectClass of [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY]) {
      const object = objectOf(session, objectClass);
      t.is(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_EC_PARAMS).toString("hex"), oid);
      t.deepEqual(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_EC_POINT), Buffer.concat([Buffer.from([4, point.length]), point]));
      t.is(ulong(session, object, pkcs11js.CKA_KEY_TYPE), pkcs11js.CKK_EC);
      t.deepEqual(attribute(fixture.pkcs11, session, object, pkcs11js.CKA_ID), expectedId(name));
    }
    t.false(bool(session, objectOf(session, pkcs11js.CKO_PRIVATE_KEY), pkcs11js.CKA_DECRYPT));
    fixture.pkcs11.C_CloseSession(session);
  });
}

test("a key without a certificate in the vault has no certificate object", (t) => {
  const session = openSession(fixture, "k1");
  fixture.pkcs11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }]);
  t.is(fixture.pkcs11.C_FindObjects(session, 10).length, 0);
  fixture.pkcs11.C_FindObjectsFinal(session);
  fixture.pkcs11.C_CloseSession(session);
});

test("secret parts are sensitive, unknown attributes invalid", (t) => {
  const session = openSession(fixture, "rsa");
  const privateKey = objectOf(session, pkcs11js.CKO_PRIVATE_KEY);
  for (const type of [pkcs11js.CKA_PRIVATE_EXPONENT, pkcs11js.CKA_PRIME_1, pkcs11js.CKA_COEFFICIENT]) {
    t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(session, privateKey, [{ type }])), pkcs11js.CKR_ATTRIBUTE_SENSITIVE);
  }
  t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(session, privateKey, [{ type: pkcs11js.CKA_EC_POINT }])), pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID);
  t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(session, privateKey, [{ type: 0x7fff0001 }])), pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID);
  const ecSession = openSession(fixture, "ec");
  t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(ecSession, objectOf(ecSession, pkcs11js.CKO_PRIVATE_KEY), [{ type: pkcs11js.CKA_VALUE }])), pkcs11js.CKR_ATTRIBUTE_SENSITIVE);
  fixture.pkcs11.C_CloseSession(ecSession);
  fixture.pkcs11.C_CloseSession(session);
});

test("token objects cannot be modified or destroyed, and handles are stable numbers", (t) => {
  const readOnly = openSession(fixture, "rsa");
  const readWrite = openSession(fixture, "rsa", true);
  const privateKey = objectOf(readWrite, pkcs11js.CKO_PRIVATE_KEY);
  t.is(Number(privateKey.readBigUInt64LE()), 1);
  t.is(Number(objectOf(readWrite, pkcs11js.CKO_PUBLIC_KEY).readBigUInt64LE()), 2);
  t.is(Number(objectOf(readWrite, pkcs11js.CKO_CERTIFICATE).readBigUInt64LE()), 3);
  const label = [{ type: pkcs11js.CKA_LABEL, value: "renamed" }];
  t.is(rvOf(() => fixture.pkcs11.C_SetAttributeValue(readWrite, privateKey, label)), CKR_ACTION_PROHIBITED);
  t.is(rvOf(() => fixture.pkcs11.C_SetAttributeValue(readOnly, privateKey, label)), pkcs11js.CKR_SESSION_READ_ONLY);
  t.is(rvOf(() => fixture.pkcs11.C_DestroyObject(readWrite, privateKey)), CKR_ACTION_PROHIBITED);
  const bogus = Buffer.alloc(8);
  bogus.writeBigUInt64LE(999n);
  t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(readWrite, bogus, [{ type: pkcs11js.CKA_CLASS }])), pkcs11js.CKR_OBJECT_HANDLE_INVALID);
  // Another token's object is not visible through this token's session.
  const other = Buffer.alloc(8);
  other.writeBigUInt64LE(17n);
  t.is(rvOf(() => fixture.pkcs11.C_GetAttributeValue(readWrite, other, [{ type: pkcs11js.CKA_CLASS }])), pkcs11js.CKR_OBJECT_HANDLE_INVALID);
  t.true(fixture.pkcs11.C_GetObjectSize(readWrite, privateKey) > 0);
  fixture.pkcs11.C_CloseSession(readOnly);
  fixture.pkcs11.C_CloseSession(readWrite);
});
