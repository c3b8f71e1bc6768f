// Shared by the vault and auth tests: a running emulator, a token from its managed-identity endpoint (fetched with
// plain node:http, independent of the code under test), and public keys built from a VaultKey's JWK fields.
import { vaultRest as harnessVaultRest } from "../module/harness.ts";
import { createPublicKey, type KeyObject } from "node:crypto";
import { get } from "node:http";
import type { ModuleConfig } from "../../src/config/types.ts";
import { startEmulator, type EmulatorOptions, type EmulatorTestControls, type RunningEmulator as InProcessEmulator } from "../../src/emulator/index.ts";
import type { VaultKey } from "../../src/vault/types.ts";

export type RunningEmulator = InProcessEmulator & EmulatorTestControls;

export function emulator(options: EmulatorOptions): Promise<RunningEmulator> {
  return startEmulator(options);
}

export function managedIdentityToken(emu: RunningEmulator, resource = "https://vault.azure.net"): Promise<string> {
  const url = `${emu.identityEndpoint}?api-version=2019-08-01&resource=${encodeURIComponent(resource)}`;
  return new Promise((resolve, reject) => {
    get(url, { headers: { "X-IDENTITY-HEADER": emu.identityHeader } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`identity endpoint: ${res.statusCode} ${body}`));
        resolve((JSON.parse(body) as { access_token: string }).access_token);
      });
    }).on("error", reject);
  });
}

export function moduleConfig(emu: RunningEmulator, overrides: Partial<ModuleConfig> = {}): ModuleConfig {
  return { source: null, slots: [], defaultVaultUrl: emu.url, caFiles: [emu.caFile], timeoutMs: 20_000, ...overrides };
}

const CURVE_NAMES: Record<string, string> = { "P-256": "P-256", "P-384": "P-384", "P-521": "P-521", "P-256K": "secp256k1" };

export function publicKeyOf(key: VaultKey): KeyObject {
  if (key.n && key.e) {
    return createPublicKey({ key: { kty: "RSA", n: key.n.toString("base64url"), e: key.e.toString("base64url") }, format: "jwk" });
  }
  if (key.crv && key.x && key.y) {
    const crv = CURVE_NAMES[key.crv];
    if (!crv) throw new Error(`unknown curve ${key.crv}`);
    return createPublicKey({ key: { kty: "EC", crv, x: key.x.toString("base64url"), y: key.y.toString("base64url") }, format: "jwk" });
  }
  throw new Error(`key ${key.name} has no public key material`);
}

/** The vault's own answer to a REST request (api-version 7.4 unless the path names one): what a test checks the backend against. */
export function vaultRest(emu: RunningEmulator, token: string, method: string, pathAndQuery: string, body?: unknown): Promise<{ status: number; body: any }> {
  const url = new URL(pathAndQuery, emu.url);
  if (!url.searchParams.has("api-version")) url.searchParams.set("api-version", "7.4");
  return harnessVaultRest(emu, token, method, `${url.pathname}${url.search}`, body);
}
