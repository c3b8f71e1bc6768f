// `npm run demo`: the product's main job on the embedded default, end to end and offline.
// Starts the Key Vault emulator with an RSA and an EC key, writes a config.json for the module, signs a file
// through the module with a real client (OpenSC's pkcs11-tool), and verifies each signature with openssl against
// the public key read from the vault's JWK, independently of the module.
import { execFileSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import path from "node:path";
import { startEmulatorProcess } from "./emulator-process.mjs";

const root = path.resolve(import.meta.dirname, "..");
const modulePath = path.join(root, "build", "azure-keyvault-pkcs11.so");
const work = path.join(root, "build", "demo");
mkdirSync(work, { recursive: true });

function say(line) {
  process.stdout.write(`${line}\n`);
}

function fetchJson(url, options = {}) {
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(target, options, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) reject(new Error(`${url} answered ${res.statusCode}: ${body}`));
        else resolve(JSON.parse(body));
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`timeout: ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

const { ready, stop: stopEmulator } = await startEmulatorProcess(["--keys", "demo-rsa:RSA:2048,demo-ec:EC:P-256", "--certs", "all"]);
process.on("exit", stopEmulator);
say(`emulator ready at ${ready.url}`);

const configPath = path.join(work, "config.json");
writeFileSync(
  configPath,
  JSON.stringify(
    {
      slots: [
        { label: "demo-rsa", key_name: "demo-rsa", vault_url: ready.url },
        { label: "demo-ec", key_name: "demo-ec", vault_url: ready.url },
      ],
    },
    null,
    2,
  ),
);
const env = {
  ...process.env,
  AZURE_KEYVAULT_PKCS11_CONFIG: configPath,
  IDENTITY_ENDPOINT: ready.identityEndpoint,
  IDENTITY_HEADER: ready.identityHeader,
  NODE_EXTRA_CA_CERTS: ready.caFile,
};
say(`module config written to ${configPath}`);

function tool(args) {
  return execFileSync("pkcs11-tool", ["--module", modulePath, ...args], { env, encoding: "utf8", timeout: 60_000 });
}

say("\n$ pkcs11-tool --list-slots");
say(tool(["--list-slots"]).trimEnd());

// The public keys come from the vault's JWK over the REST API, never from the module under demonstration.
const tokenUrl = new URL(ready.identityEndpoint);
tokenUrl.searchParams.set("resource", "https://vault.azure.net");
tokenUrl.searchParams.set("api-version", "2019-08-01");
const { access_token: token } = await fetchJson(tokenUrl, { headers: { "X-IDENTITY-HEADER": ready.identityHeader } });
async function vaultPublicKeyPem(name) {
  const bundle = await fetchJson(`${ready.url}/keys/${name}?api-version=7.6`, {
    headers: { Authorization: `Bearer ${token}` },
    ca: readFileSync(ready.caFile),
  });
  const file = path.join(work, `${name}.pub.pem`);
  writeFileSync(file, createPublicKey({ key: bundle.key, format: "jwk" }).export({ type: "spki", format: "pem" }));
  return file;
}

const input = path.join(work, "release.tar");
writeFileSync(input, `an artefact to sign, made at ${new Date().toISOString()}\n`);

let failures = 0;
for (const { token: label, mechanism, extra } of [
  { token: "demo-rsa", mechanism: "SHA256-RSA-PKCS", extra: [] },
  { token: "demo-ec", mechanism: "ECDSA-SHA256", extra: ["--signature-format", "openssl"] },
]) {
  const signature = path.join(work, `${label}.sig`);
  say(`\n$ pkcs11-tool --token-label ${label} --sign --mechanism ${mechanism} --input-file release.tar`);
  tool(["--token-label", label, "--sign", "--mechanism", mechanism, ...extra, "--input-file", input, "--output-file", signature]);
  const publicKey = await vaultPublicKeyPem(label);
  say(`$ openssl dgst -sha256 -verify ${path.basename(publicKey)} -signature ${path.basename(signature)} release.tar`);
  try {
    say(execFileSync("openssl", ["dgst", "-sha256", "-verify", publicKey, "-signature", signature, input], { encoding: "utf8" }).trimEnd());
  } catch (error) {
    failures++;
    say(`FAILED: ${error.stdout ?? error.message}`);
  }
}

stopEmulator();
say(failures === 0 ? "\ndemo: every signature made through the module verified against the vault's public key" : `\ndemo: ${failures} signature(s) failed`);
process.exitCode = failures === 0 ? 0 : 1;
