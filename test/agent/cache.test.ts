// The agent context's key cache (src/agent/cache.ts): one vault read per key for every application of a context,
// re-read in the background once older than the refresh interval, dropped after a failure that suggests the key
// changed, and never keeping a failed read.
import test from "ava";
import { CachingVaultBackend } from "../../src/agent/cache.ts";
import { VaultError, type VaultKey } from "../../src/vault/types.ts";
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
}

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
