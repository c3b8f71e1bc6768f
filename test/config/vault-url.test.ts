import test from "ava";
import { isLoopbackHost, isManagedHsmHost, normaliseVaultUrl } from "../../src/config/index.ts";

test("normaliseVaultUrl keeps the origin only, lower-cased, without a trailing slash", (t) => {
  t.deepEqual(normaliseVaultUrl("https://My-Vault.Vault.Azure.Net/"), { ok: true, url: "https://my-vault.vault.azure.net" });
  t.deepEqual(normaliseVaultUrl(" https://v.vault.azure.net:443 "), { ok: true, url: "https://v.vault.azure.net" });
  t.deepEqual(normaliseVaultUrl("https://127.0.0.1:8443"), { ok: true, url: "https://127.0.0.1:8443" });
  t.deepEqual(normaliseVaultUrl("https://[::1]:8443/"), { ok: true, url: "https://[::1]:8443" });
  for (const bad of ["http://v.vault.azure.net", "v.vault.azure.net", "https://user:pw@v.vault.azure.net", "https://v.vault.azure.net/keys", "https://v.vault.azure.net/?x=1"]) {
    t.false(normaliseVaultUrl(bad).ok, bad);
  }
});

test("loopback hosts (no challenge resource verification) and Managed HSM hosts", (t) => {
  for (const host of ["localhost", "LOCALHOST", "vault.localhost", "127.0.0.1", "127.1.2.3", "[::1]", "::1"]) t.true(isLoopbackHost(host), host);
  for (const host of ["my-vault.vault.azure.net", "128.0.0.1", "127.0.0.256", "localhost.example.com", "10.0.0.1", "::2"]) t.false(isLoopbackHost(host), host);
  t.true(isManagedHsmHost("my-hsm.managedhsm.azure.net"));
  t.false(isManagedHsmHost("my-vault.vault.azure.net"));
});
