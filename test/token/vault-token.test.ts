// The vault token (src/token/vault-token.ts) over an in-memory vault: finds by CKA_CLASS, CKA_LABEL and a tagged
// CKA_ID answer from the listing with no request per key; other attributes read only the keys they need; handles
// depend on the names only; made, changed and destroyed keys show at once, and a name is never overwritten.
import test from "ava";
import { generateKeyPairSync } from "node:crypto";
import type { VaultSlot } from "../../src/config/types.ts";
import { CKA, CKK, CKO, CKR } from "../../src/pkcs11/constants.ts";
import { Pkcs11Error } from "../../src/pkcs11/error.ts";
import { encodeUlong } from "../../src/token/attributes.ts";
import { VaultToken } from "../../src/token/vault-token.ts";
import { VaultError, type NewKeyProperties, type NewKeySpec, type VaultKey, type VaultKeyListing } from "../../src/vault/types.ts";
import { UnusedVaultBackend } from "../vault/unused-backend.ts";

const VAULT = "https://unit.vault.azure.net";
const SLOT: VaultSlot = { kind: "vault", label: "unit", vaultUrl: VAULT, hsm: false };
const ulong = (value: number): Buffer => encodeUlong(value, 8);

function ecKey(name: string, tags: Record<string, string> = {}): VaultKey {
  const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "jwk" });
  return {
    name, version: "v1", kid: `${VAULT}/keys/${name}/v1`, vaultUrl: VAULT, kty: "EC", crv: "P-256",
    x: Buffer.from(jwk.x!, "base64url"), y: Buffer.from(jwk.y!, "base64url"), keyOps: ["sign", "verify"], enabled: true, managedHsm: false, tags,
  };
}

/** A vault in memory that counts what it is asked. */
class MemoryVault extends UnusedVaultBackend {
  readonly keys = new Map<string, VaultKey>();
  readonly deleted = new Set<string>();
  calls: Record<string, number> = {};
  private count(what: string): void {
    this.calls[what] = (this.calls[what] ?? 0) + 1;
  }
  override async serviceKind(): Promise<"key-vault"> {
    return "key-vault";
  }
  override async listKeys(): Promise<VaultKeyListing[]> {
    this.count("list-keys");
    return [...this.keys.values()].map((key) => ({ name: key.name, kid: `${VAULT}/keys/${key.name}`, enabled: true, managed: false, tags: { ...key.tags } }));
  }
  override async listCertificateNames(): Promise<string[]> {
    return [];
  }
  override async listStoredCertificates(): Promise<[]> {
    return [];
  }
  override async getKey(_vaultUrl: string, name: string): Promise<VaultKey> {
    this.count("get-key");
    const key = this.keys.get(name.toLowerCase());
    if (!key) throw new VaultError("not-found", `key ${name} not found`, 404);
    return key;
  }
  override async createKey(_vaultUrl: string, name: string, spec: NewKeySpec, properties: NewKeyProperties): Promise<VaultKey> {
    this.count("create-key");
    if (this.keys.has(name.toLowerCase()) || this.deleted.has(name.toLowerCase())) throw new VaultError("conflict", `key '${name}' already exists`, 409);
    if (spec.kty !== "EC") throw new Error("this fake makes EC keys");
    const key = { ...ecKey(name, properties.tags), keyOps: properties.keyOps };
    this.keys.set(name.toLowerCase(), key);
    return key;
  }
  override async updateKeyTags(key: VaultKey, tags: Record<string, string>): Promise<VaultKey> {
    this.count("update-key");
    const updated = { ...this.keys.get(key.name.toLowerCase())!, tags };
    this.keys.set(key.name.toLowerCase(), updated);
    return updated;
  }
  override async deleteKey(_vaultUrl: string, name: string): Promise<void> {
    this.count("delete-key");
    this.keys.delete(name.toLowerCase());
    this.deleted.add(name.toLowerCase());
  }
}

function vaultOf(count: number, tagged: (index: number) => Record<string, string> = () => ({})): MemoryVault {
  const vault = new MemoryVault();
  for (let index = 0; index < count; index++) {
    const name = `key-${String(index).padStart(3, "0")}`;
    vault.keys.set(name, ecKey(name, tagged(index)));
  }
  return vault;
}

const classIs = (objectClass: number) => ({ type: CKA.CLASS, value: ulong(objectClass) });
const labelIs = (label: string) => ({ type: CKA.LABEL, value: Buffer.from(label) });

test("a find by class, label or tagged id waits for one listing only, and reads no key but the one it narrowed to", async (t) => {
  const vault = vaultOf(200, (index) => ({ p11_pri_CKA_LABEL: `label ${index}`, p11_pri_CKA_ID: index.toString(16).padStart(4, "0") }));
  const token = new VaultToken(0, SLOT, vault, 8);
  const byLabel = await token.find([classIs(CKO.PRIVATE_KEY), labelIs("label 7")]);
  t.is(byLabel.length, 1);
  const byId = await token.find([classIs(CKO.PUBLIC_KEY), { type: CKA.ID, value: Buffer.from("0007", "hex") }]);
  t.is(byId.length, 1, "the public key shares the private key's tagged id");
  t.is((await token.find([classIs(CKO.PRIVATE_KEY)])).length, 200);
  // The finds waited for the listing only; the two keys they narrowed to are read ahead, in the background.
  t.is(vault.calls["list-keys"], 1);
  t.true((vault.calls["get-key"] ?? 0) <= 1, `read ahead: ${vault.calls["get-key"]} key(s), at most the one both finds narrowed to`);
  const { object, material } = await token.object(byLabel[0]!);
  t.is(object.attributes.get(CKA.LABEL)!.toString(), "label 7");
  t.deepEqual(object.attributes.get(CKA.ID), Buffer.from("0007", "hex"));
  t.is(material!.key.name, "key-007");
  t.deepEqual(vault.calls, { "list-keys": 1, "get-key": 1 }, "the found key read once, no other");
});

test("a find by an attribute the listing lacks reads only the keys still in question", async (t) => {
  const vault = vaultOf(20);
  const token = new VaultToken(0, SLOT, vault, 8);
  const ecPrivate = await token.find([classIs(CKO.PRIVATE_KEY), labelIs("key-003"), { type: CKA.KEY_TYPE, value: ulong(CKK.EC) }]);
  t.is(ecPrivate.length, 1);
  t.is(vault.calls["get-key"], 1, "the label ruled out every other key before any was read");
  // An untagged key's CKA_ID is the SHA-1 of its public key: known only once read.
  const key = vault.keys.get("key-010")!;
  const { material } = await token.object((await token.find([labelIs("key-010"), classIs(CKO.PUBLIC_KEY)]))[0]!);
  const byId = await token.find([classIs(CKO.PRIVATE_KEY), { type: CKA.ID, value: material!.id }]);
  t.is(byId.length, 1);
  t.is((await token.object(byId[0]!)).material!.key, key);
  t.is(vault.calls["get-key"], 20, "every key was read once to compare computed ids, none twice");
});

test("handles depend on the slot and the names, not on the order of calls", async (t) => {
  const first = new VaultToken(0, SLOT, vaultOf(50), 8);
  const second = new VaultToken(0, SLOT, vaultOf(50), 8);
  const other = new VaultToken(1, SLOT, vaultOf(50), 8);
  const a = await first.find([labelIs("key-042")]);
  await second.find([classIs(CKO.PUBLIC_KEY)]);
  const b = await second.find([labelIs("key-042")]);
  t.deepEqual(a, b);
  t.notDeepEqual(a, await other.find([labelIs("key-042")]));
  for (const handle of a) t.true(handle >= 0x10000000 && handle < 0x80000000, `handle ${handle} fits a 32-bit CK_ULONG below the session objects`);
});

test("a generated key shows at once with its tags; its name is never taken twice", async (t) => {
  const vault = vaultOf(2);
  const token = new VaultToken(0, SLOT, vault, 8);
  const request = {
    preferredName: "release-signer",
    spec: { kty: "EC", curve: "P-256" } as const,
    properties: { keyOps: ["sign", "verify"], tags: {} },
    identities: { private: { label: "release-signer", id: Buffer.from("0a0b", "hex") }, public: { label: "release-signer", id: Buffer.from("0a0b", "hex") } },
  };
  const created = await token.createKey(request);
  t.deepEqual(vault.keys.get("release-signer")!.tags, { p11_pri_CKA_LABEL: "release-signer", p11_pri_CKA_ID: "0a0b", p11_pub_CKA_LABEL: "release-signer", p11_pub_CKA_ID: "0a0b" });
  t.deepEqual(await token.find([{ type: CKA.ID, value: Buffer.from("0a0b", "hex") }, classIs(CKO.PRIVATE_KEY)]), [created.privateHandle]);
  const again = await t.throwsAsync(token.createKey(request), { instanceOf: Pkcs11Error });
  t.is(again.rv, CKR.ATTRIBUTE_VALUE_INVALID);
  t.is(vault.calls["create-key"], 1, "the taken name was refused before the vault was asked");
  // A later process finds it by the tags alone.
  const later = new VaultToken(0, SLOT, vault, 8);
  t.deepEqual(await later.find([labelIs("release-signer"), classIs(CKO.PRIVATE_KEY)]), [created.privateHandle]);
});

test("C_SetAttributeValue's label lands in the tags of that side only; destroying the private key removes the key's objects", async (t) => {
  const vault = vaultOf(3);
  const token = new VaultToken(0, SLOT, vault, 8);
  const [privateHandle] = await token.find([labelIs("key-001"), classIs(CKO.PRIVATE_KEY)]);
  const [publicHandle] = await token.find([labelIs("key-001"), classIs(CKO.PUBLIC_KEY)]);
  await token.setIdentity(privateHandle!, { label: "renamed" });
  t.deepEqual(vault.keys.get("key-001")!.tags, { p11_pri_CKA_LABEL: "renamed", p11_pub_CKA_LABEL: "key-001" });
  t.deepEqual(await token.find([labelIs("renamed")]), [privateHandle]);
  t.is((await token.object(publicHandle!)).object.attributes.get(CKA.LABEL)!.toString(), "key-001");
  const refused = await t.throwsAsync(token.destroy(publicHandle!), { instanceOf: Pkcs11Error });
  t.is(refused.rv, CKR.ACTION_PROHIBITED);
  await token.destroy(privateHandle!);
  t.true(vault.deleted.has("key-001"));
  t.deepEqual(await token.find([labelIs("key-001")]), []);
  for (const handle of [privateHandle!, publicHandle!]) {
    const gone = await t.throwsAsync(Promise.resolve().then(() => token.object(handle)), { instanceOf: Pkcs11Error });
    t.is(gone.rv, CKR.OBJECT_HANDLE_INVALID);
  }
});

test("a key deleted elsewhere drops out of the token when it is read", async (t) => {
  const vault = vaultOf(12);
  const token = new VaultToken(0, SLOT, vault, 8);
  // A find of more keys than are read ahead: key-002 is listed, not read.
  const handles = (await token.find([classIs(CKO.PRIVATE_KEY)])).slice(2, 3);
  t.false("get-key" in vault.calls);
  vault.keys.delete("key-002");
  const gone = await t.throwsAsync(Promise.resolve().then(() => token.object(handles[0]!)), { instanceOf: Pkcs11Error });
  t.is(gone.rv, CKR.OBJECT_HANDLE_INVALID);
  t.deepEqual(await token.find([labelIs("key-002")]), []);
});

test("a stored certificate removed by another process leaves its key without a certificate, not hidden", async (t) => {
  const vault = vaultOf(2);
  vault.listStoredCertificates = async () => [{ name: "p11-cert-key-001", keyName: "key-001", tags: { p11_cert_key: "key-001" } }] as never;
  vault.getStoredCertificate = async () => Promise.reject(new VaultError("not-found", "secret p11-cert-key-001 not found", 404));
  const token = new VaultToken(0, SLOT, vault, 8);
  t.is((await token.find([labelIs("key-001"), classIs(CKO.CERTIFICATE)])).length, 1, "the listing says there is a certificate");
  const [privateKey] = await token.find([labelIs("key-001"), classIs(CKO.PRIVATE_KEY)]);
  const { material } = await token.object(privateKey!);
  t.is(material!.key.name, "key-001");
  t.deepEqual(await token.find([labelIs("key-001"), classIs(CKO.CERTIFICATE)]), []);
});
