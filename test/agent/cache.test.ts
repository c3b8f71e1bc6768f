// The agent context's key cache (src/agent/cache.ts): one vault read per key for every application of a context,
// re-read in the background once older than the refresh interval, dropped after a failure that suggests the key
// changed, and never keeping a failed read.
import test from "ava";
import { CachingVaultBackend } from "../../src/agent/cache.ts";
import { VaultError, type StoredCertificate, type VaultKey, type VaultKeyListing } from "../../src/vault/types.ts";
import { UnusedVaultBackend } from "../vault/unused-backend.ts";

const VAULT = "https://unit.vault.azure.net";

function key(version: string, keyOps = ["sign"]): VaultKey {
  return { name: "k", version, kid: `${VAULT}/keys/k/${version}`, vaultUrl: VAULT, kty: "EC", crv: "P-256", x: Buffer.alloc(32), y: Buffer.alloc(32), keyOps, enabled: true, managedHsm: false, tags: {} };
}

/** A vault whose answers the test sets, counting what it is asked. */
class ScriptedVault extends UnusedVaultBackend {
  calls: Record<string, number> = {};
  current = key("v1");
  keyFailure: Error | undefined;
  signFailure: Error | undefined;

  private count(what: string): void {
    this.calls[what] = (this.calls[what] ?? 0) + 1;
  }
  override async getKey(): Promise<VaultKey> {
    this.count("get-key");
    if (this.keyFailure) throw this.keyFailure;
    return this.current;
  }
  override async listKeyNames(): Promise<string[]> {
    this.count("list-keys");
    return ["k"];
  }
  override async getCertificate(): Promise<Buffer | undefined> {
    this.count("get-certificate");
    return Buffer.from("der");
  }
  override async sign(): Promise<Buffer> {
    this.count("sign");
    if (this.signFailure) throw this.signFailure;
    return Buffer.alloc(64, 1);
  }
  override async decrypt(): Promise<Buffer> {
    this.count("decrypt");
    return Buffer.alloc(0);
  }
  override async getRandomBytes(): Promise<Buffer | undefined> {
    return undefined;
  }
  override async close(): Promise<void> {}

  /** What the vault's listings say now; a write below changes them as the vault would. */
  tags: Record<string, string> = { p11_pri_CKA_LABEL: "one" };
  storedDer = Buffer.from("stored-v1");
  /** When set, writes wait for it (a write in flight) and then fail or succeed as writeFailure says. */
  writeGate: Promise<void> | undefined;
  writeFailure: Error | undefined;
  refreshGate: Promise<void> | undefined;

  override async listKeys(): Promise<VaultKeyListing[]> {
    this.count("list-keys-with-tags");
    const tags = { ...this.tags };
    if (this.refreshGate) await this.refreshGate;
    return [{ name: "k", kid: `${VAULT}/keys/k`, enabled: true, managed: false, tags }];
  }
  override async listCertificateNames(): Promise<string[]> {
    this.count("list-certificates");
    return ["k"];
  }
  override async listStoredCertificates(): Promise<StoredCertificate[]> {
    this.count("list-stored");
    return [{ name: "p11-cert-k", keyName: "k", tags: { p11_cert_key: "k" } }];
  }
  override async getStoredCertificate(): Promise<Buffer> {
    this.count("get-stored");
    return this.storedDer;
  }
  private async write<T>(what: string, change: () => void, result: T): Promise<T> {
    this.count(what);
    if (this.writeGate) await this.writeGate;
    if (this.writeFailure) throw this.writeFailure;
    change();
    return result;
  }
  override createKey(): Promise<VaultKey> {
    return this.write("create-key", () => (this.current = key("v2")), key("v2"));
  }
  override importKey(): Promise<VaultKey> {
    return this.write("import-key", () => (this.current = key("v2")), key("v2"));
  }
  override updateKeyTags(_key: VaultKey, tags: Record<string, string>): Promise<VaultKey> {
    return this.write("update-key", () => {
      this.tags = tags;
      this.current = { ...this.current, tags };
    }, { ...this.current, tags });
  }
  override deleteKey(): Promise<void> {
    return this.write("delete-key", () => (this.keyFailure = new VaultError("not-found", "deleted")), undefined);
  }
  override storeCertificate(): Promise<void> {
    return this.write("store-certificate", () => (this.storedDer = Buffer.from("stored-v2")), undefined);
  }
  override deleteStoredCertificate(): Promise<void> {
    return this.write("delete-stored", () => (this.storedDer = Buffer.from("gone")), undefined);
  }
  override async encryptAes(): Promise<{ ciphertext: Buffer; iv?: Buffer; tag?: Buffer }> {
    this.count("encrypt");
    if (this.signFailure) throw this.signFailure;
    return { ciphertext: Buffer.alloc(16) };
  }
}

/** Reads every cached kind of entry once (the key pinned and not, its certificate and every listing). */
async function readAll(cache: CachingVaultBackend): Promise<void> {
  await cache.getKey(VAULT, "k").catch(() => undefined);
  await cache.getKey(VAULT, "k", "v1").catch(() => undefined);
  await cache.getCertificate(VAULT, "k");
  await cache.listKeyNames(VAULT);
  await cache.listKeys(VAULT);
  await cache.listCertificateNames(VAULT);
  await cache.listStoredCertificates(VAULT);
  await cache.getStoredCertificate(VAULT, "p11-cert-k");
}

const KEY_READS = { "get-key": 2, "get-certificate": 1, "list-keys": 1, "list-keys-with-tags": 1 };
const STORED_READS = { "list-stored": 1, "get-stored": 1 };
const ALL_READS = { ...KEY_READS, ...STORED_READS, "list-certificates": 1 };

const settle = () => new Promise((resolve) => setImmediate(resolve));

test("every application of a context reads each key, certificate and listing from the vault once", async (t) => {
  const vault = new ScriptedVault();
  const cache = new CachingVaultBackend(vault, 60_000);
  for (let application = 0; application < 5; application++) {
    t.is((await cache.getKey(VAULT, "k")).version, "v1");
    t.is((await cache.getKey(VAULT, "K")).version, "v1", "names are case-insensitive");
    t.deepEqual(await cache.getCertificate(VAULT, "k"), Buffer.from("der"));
    t.deepEqual(await cache.listKeyNames(VAULT), ["k"]);
  }
  t.deepEqual(vault.calls, { "get-key": 1, "get-certificate": 1, "list-keys": 1 });
});

test("an entry older than the refresh interval is served, read again in the background, and the new version wins", async (t) => {
  const vault = new ScriptedVault();
  let now = 1_000_000;
  const cache = new CachingVaultBackend(vault, 300_000, () => now);
  t.is((await cache.getKey(VAULT, "k")).version, "v1");
  vault.current = key("v2");
  now += 299_999;
  t.is((await cache.getKey(VAULT, "k")).version, "v1");
  t.is(vault.calls["get-key"], 1, "not yet due");
  now += 1;
  t.is((await cache.getKey(VAULT, "k")).version, "v1", "the stale entry is served while it is read again");
  await settle();
  t.is(vault.calls["get-key"], 2);
  t.is((await cache.getKey(VAULT, "k")).version, "v2", "a new version when none is pinned");
  t.is(vault.calls["get-key"], 2);
});

for (const kind of ["not-found", "forbidden", "bad-parameter"] as const) {
  test(`a sign that fails with ${kind} drops the key, its certificate and the listing; the next read goes to the vault`, async (t) => {
    const vault = new ScriptedVault();
    const cache = new CachingVaultBackend(vault, 60_000);
    const loaded = await cache.getKey(VAULT, "k");
    await cache.getKey(VAULT, "k", "v1");
    await cache.getCertificate(VAULT, "k");
    await cache.listKeyNames(VAULT);
    vault.signFailure = new VaultError(kind, `simulated ${kind}`);
    await t.throwsAsync(cache.sign(loaded, "ES256", Buffer.alloc(32)), { instanceOf: VaultError });
    vault.signFailure = undefined;
    vault.current = key("v2", ["verify"]);
    t.deepEqual((await cache.getKey(VAULT, "k")).keyOps, ["verify"], "changed key_ops are seen");
    await cache.getKey(VAULT, "k", "v1");
    await cache.getCertificate(VAULT, "k");
    await cache.listKeyNames(VAULT);
    t.deepEqual(vault.calls, { "get-key": 4, "get-certificate": 2, "list-keys": 2, sign: 1 });
  });
}

test("a passing failure of a sign keeps the cache; a failed read is never kept", async (t) => {
  const vault = new ScriptedVault();
  const cache = new CachingVaultBackend(vault, 60_000);
  const loaded = await cache.getKey(VAULT, "k");
  vault.signFailure = new VaultError("throttled", "simulated 429");
  await t.throwsAsync(cache.sign(loaded, "ES256", Buffer.alloc(32)));
  await cache.getKey(VAULT, "k");
  t.is(vault.calls["get-key"], 1, "a 429 says nothing about the key");

  const other = new ScriptedVault();
  const fresh = new CachingVaultBackend(other, 60_000);
  other.keyFailure = new VaultError("network", "simulated reset");
  await t.throwsAsync(fresh.getKey(VAULT, "k"));
  await settle();
  other.keyFailure = undefined;
  t.is((await fresh.getKey(VAULT, "k")).version, "v1");
  t.is(other.calls["get-key"], 2, "the failure was not cached");
});

test("a background re-read that fails with not-found drops the entry; one that fails passingly keeps it", async (t) => {
  const vault = new ScriptedVault();
  let now = 0;
  const cache = new CachingVaultBackend(vault, 1000, () => now);
  await cache.getKey(VAULT, "k");
  now += 1000;
  vault.keyFailure = new VaultError("network", "simulated reset");
  t.is((await cache.getKey(VAULT, "k")).version, "v1");
  await settle();
  vault.keyFailure = undefined;
  t.is((await cache.getKey(VAULT, "k")).version, "v1", "still served after a passing failure");
  await settle();
  const readsBefore = vault.calls["get-key"]!;
  now += 1000;
  vault.keyFailure = new VaultError("not-found", "simulated 404");
  await cache.getKey(VAULT, "k");
  await settle();
  await t.throwsAsync(cache.getKey(VAULT, "k"), { message: "simulated 404" });
  t.true(vault.calls["get-key"]! > readsBefore);
});

test("the key listing with tags, the certificate names and the stored certificates are read once per context", async (t) => {
  const vault = new ScriptedVault();
  const cache = new CachingVaultBackend(vault, 60_000);
  for (let application = 0; application < 5; application++) {
    t.deepEqual((await cache.listKeys(VAULT)).map((entry) => entry.tags), [{ p11_pri_CKA_LABEL: "one" }]);
    t.deepEqual(await cache.listCertificateNames(VAULT), ["k"]);
    t.deepEqual((await cache.listStoredCertificates(VAULT)).map((entry) => entry.keyName), ["k"]);
    t.deepEqual(await cache.getStoredCertificate(VAULT, "p11-cert-k"), Buffer.from("stored-v1"));
    t.deepEqual(await cache.getStoredCertificate(VAULT, "P11-CERT-K"), Buffer.from("stored-v1"), "names are case-insensitive");
  }
  t.deepEqual(vault.calls, { "list-keys-with-tags": 1, "list-certificates": 1, "list-stored": 1, "get-stored": 1 });
});

const keyWrites: Array<[string, (cache: CachingVaultBackend, loaded: VaultKey) => Promise<unknown>]> = [
  ["create-key", (cache) => cache.createKey(VAULT, "k", { kty: "EC", curve: "P-256" }, { keyOps: ["sign"], tags: {} })],
  ["import-key", (cache) => cache.importKey(VAULT, "k", { kty: "EC", crv: "P-256" }, { keyOps: ["sign"], tags: {} })],
  ["update-key", (cache, loaded) => cache.updateKeyTags(loaded, { p11_pri_CKA_LABEL: "two" })],
  ["delete-key", (cache) => cache.deleteKey(VAULT, "k")],
];

for (const [write, run] of keyWrites) {
  test(`${write} passes through and drops the key's entries and the vault's key listings at once, nothing else`, async (t) => {
    const vault = new ScriptedVault();
    const cache = new CachingVaultBackend(vault, 60_000);
    await readAll(cache);
    t.deepEqual(vault.calls, ALL_READS);
    await run(cache, await cache.getKey(VAULT, "k"));
    t.is(vault.calls[write], 1, "the write reached the vault");
    await readAll(cache);
    t.deepEqual(vault.calls, { ...ALL_READS, [write]: 1, "get-key": 4, "get-certificate": 2, "list-keys": 2, "list-keys-with-tags": 2 });
    if (write === "update-key") t.deepEqual((await cache.listKeys(VAULT))[0]!.tags, { p11_pri_CKA_LABEL: "two" }, "the new tags are listed");
    if (write === "delete-key") await t.throwsAsync(cache.getKey(VAULT, "k"), { message: "deleted" });
    if (write === "create-key") t.is((await cache.getKey(VAULT, "k")).version, "v2");
  });
}

for (const [write, run] of [
  ["store-certificate", (cache: CachingVaultBackend) => cache.storeCertificate(VAULT, "p11-cert-k", Buffer.from("stored-v2"), { p11_cert_key: "k" })],
  ["delete-stored", (cache: CachingVaultBackend) => cache.deleteStoredCertificate(VAULT, "P11-cert-K")],
] as const) {
  test(`${write} passes through and drops that stored certificate and the stored listing, not the keys`, async (t) => {
    const vault = new ScriptedVault();
    const cache = new CachingVaultBackend(vault, 60_000);
    await readAll(cache);
    await run(cache);
    await readAll(cache);
    t.deepEqual(vault.calls, { ...ALL_READS, [write]: 1, "list-stored": 2, "get-stored": 2 });
    t.deepEqual(await cache.getStoredCertificate(VAULT, "p11-cert-k"), write === "delete-stored" ? Buffer.from("gone") : Buffer.from("stored-v2"));
  });
}

test("a failed write drops what it may have changed, and so does a read answered while the write was in flight", async (t) => {
  const vault = new ScriptedVault();
  const cache = new CachingVaultBackend(vault, 60_000);
  const loaded = await cache.getKey(VAULT, "k");
  await cache.listKeys(VAULT);
  vault.writeFailure = new VaultError("timeout", "simulated deadline");
  await t.throwsAsync(cache.updateKeyTags(loaded, { p11_pri_CKA_LABEL: "two" }), { message: "simulated deadline" });
  await cache.listKeys(VAULT);
  t.is(vault.calls["list-keys-with-tags"], 2, "a timed-out write may have happened: the listing is read again");

  vault.writeFailure = undefined;
  let open!: () => void;
  vault.writeGate = new Promise((resolve) => (open = resolve));
  const writing = cache.updateKeyTags(loaded, { p11_pri_CKA_LABEL: "three" });
  await settle();
  t.deepEqual((await cache.listKeys(VAULT))[0]!.tags, { p11_pri_CKA_LABEL: "one" }, "read while the write is in flight");
  open();
  await writing;
  t.deepEqual((await cache.listKeys(VAULT))[0]!.tags, { p11_pri_CKA_LABEL: "three" }, "the in-flight read was not kept");
});

test("a background re-read that started before a write and ends after it does not bring the old listing back", async (t) => {
  const vault = new ScriptedVault();
  let now = 0;
  const cache = new CachingVaultBackend(vault, 1000, () => now);
  const loaded = await cache.getKey(VAULT, "k");
  await cache.listKeys(VAULT);
  now += 1000;
  let open!: () => void;
  vault.refreshGate = new Promise((resolve) => (open = resolve));
  t.deepEqual((await cache.listKeys(VAULT))[0]!.tags, { p11_pri_CKA_LABEL: "one" }, "stale entry served, re-read started");
  await settle();
  vault.refreshGate = undefined;
  await cache.updateKeyTags(loaded, { p11_pri_CKA_LABEL: "two" });
  open();
  await settle();
  await settle();
  t.deepEqual((await cache.listKeys(VAULT))[0]!.tags, { p11_pri_CKA_LABEL: "two" });
  t.is(vault.calls["list-keys-with-tags"], 3);
});

test("an AES operation that fails with not-found drops the key like a sign does; a passing failure keeps it", async (t) => {
  const vault = new ScriptedVault();
  const cache = new CachingVaultBackend(vault, 60_000);
  const loaded = await cache.getKey(VAULT, "k");
  vault.signFailure = new VaultError("throttled", "simulated 429");
  await t.throwsAsync(cache.encryptAes(loaded, "A256CBC", Buffer.alloc(16), { iv: Buffer.alloc(16) }));
  await cache.getKey(VAULT, "k");
  t.is(vault.calls["get-key"], 1);
  vault.signFailure = new VaultError("not-found", "simulated 404");
  await t.throwsAsync(cache.encryptAes(loaded, "A256CBC", Buffer.alloc(16), { iv: Buffer.alloc(16) }));
  await cache.getKey(VAULT, "k");
  t.is(vault.calls["get-key"], 2);
});
