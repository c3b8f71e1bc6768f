// The last step of `npm run build`: runs the built module once through the calls a typical client makes (list
// tokens, read every object's attributes, sign with each mechanism family, decrypt) against the emulator, with the
// helper told to write its V8 code cache at exit (AZURE_KEYVAULT_PKCS11_CODE_CACHE_OUT, src/helper/loader.ts).
// That cache holds the functions those calls compiled, not only the bundle's top level, so a host's first
// C_Initialize and signature skip compiling them. If anything here fails, the top-level cache that
// scripts/bundle.mjs wrote stays, and the build goes on: it only costs start-up time.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pkcs11js from "pkcs11js";
import { startEmulatorProcess } from "./emulator-process.mjs";

const root = path.resolve(import.meta.dirname, "..");
const build = path.join(root, "build");
const cacheFile = path.join(build, "helper-main.cache");
const dir = mkdtempSync(path.join(tmpdir(), "akv-warm-"));

const ATTRIBUTES = [
  pkcs11js.CKA_CLASS, pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_ID, pkcs11js.CKA_LABEL, pkcs11js.CKA_SIGN, pkcs11js.CKA_DECRYPT,
  pkcs11js.CKA_MODULUS, pkcs11js.CKA_PUBLIC_EXPONENT, pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_EC_POINT, pkcs11js.CKA_VALUE,
  pkcs11js.CKA_SUBJECT, pkcs11js.CKA_ISSUER, pkcs11js.CKA_SERIAL_NUMBER, pkcs11js.CKA_ALLOWED_MECHANISMS,
];
const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

function exercise(pkcs11) {
  const message = Buffer.from("warm-up");
  const digest = createHash("sha256").update(message).digest();
  pkcs11.C_GetInfo();
  for (const slot of pkcs11.C_GetSlotList(true)) {
    pkcs11.C_GetSlotInfo(slot);
    pkcs11.C_GetTokenInfo(slot);
    for (const mechanism of pkcs11.C_GetMechanismList(slot)) pkcs11.C_GetMechanismInfo(slot, mechanism);
    const session = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    pkcs11.C_FindObjectsInit(session, []);
    const objects = pkcs11.C_FindObjects(session, 16);
    pkcs11.C_FindObjectsFinal(session);
    for (const object of objects) {
      for (const type of ATTRIBUTES) {
        try {
          pkcs11.C_GetAttributeValue(session, object, [{ type }]);
        } catch {
          // Attributes of another class or key type: CKR_ATTRIBUTE_TYPE_INVALID, as expected.
        }
      }
    }
    pkcs11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }]);
    const [key] = pkcs11.C_FindObjects(session, 1);
    pkcs11.C_FindObjectsFinal(session);
    const keyType = pkcs11.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_KEY_TYPE }])[0].value.readUInt32LE(0);
    const sign = (mechanism, data) => {
      pkcs11.C_SignInit(session, mechanism, key);
      pkcs11.C_Sign(session, data, Buffer.alloc(512));
    };
    if (keyType === pkcs11js.CKK_EC) {
      sign({ mechanism: pkcs11js.CKM_ECDSA }, digest);
      sign({ mechanism: pkcs11js.CKM_ECDSA_SHA256 }, message);
    } else {
      sign({ mechanism: pkcs11js.CKM_RSA_PKCS }, Buffer.concat([SHA256_DIGEST_INFO, digest]));
      sign({ mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, message);
      const pss = { hashAlg: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, saltLen: 32 };
      sign({ mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter: { ...pss, type: pkcs11js.CK_PARAMS_RSA_PSS } }, digest);
    }
    pkcs11.C_GenerateRandom(session, Buffer.alloc(32));
    pkcs11.C_CloseSession(session);
  }
}

let pkcs11;
let stopEmulator;
try {
  const emulator = await startEmulatorProcess(["--keys", "warm-rsa:RSA:2048,warm-ec:EC:P-256", "--certs", "all"], { stderr: "ignore" });
  stopEmulator = emulator.stop;
  const { url, identityEndpoint, identityHeader, caFile } = emulator.ready;
  const config = path.join(dir, "config.json");
  writeFileSync(config, JSON.stringify({ slots: [{ key_name: "warm-rsa", vault_url: url }, { key_name: "warm-ec", vault_url: url }] }));
  // Written next to the old cache and renamed over it: a build never leaves a half-written cache behind.
  const fresh = path.join(build, `helper-main.cache.${randomBytes(4).toString("hex")}`);
  // Only the emulator's managed identity may answer: a developer's own Azure settings must not take part.
  for (const name of Object.keys(process.env)) if (name.startsWith("AZURE_")) delete process.env[name];
  Object.assign(process.env, {
    HOME: dir,
    XDG_CONFIG_HOME: dir,
    AZURE_KEYVAULT_PKCS11_CONFIG: config,
    AZURE_KEYVAULT_PKCS11_CODE_CACHE_OUT: fresh,
    IDENTITY_ENDPOINT: identityEndpoint,
    IDENTITY_HEADER: identityHeader,
    NODE_EXTRA_CA_CERTS: caFile,
  });
  pkcs11 = new pkcs11js.PKCS11();
  pkcs11.load(path.join(build, "azure-keyvault-pkcs11.so"));
  pkcs11.C_Initialize();
  exercise(pkcs11);
  // C_Finalize waits for the helper to exit, and so for the cache it writes on the way out.
  pkcs11.C_Finalize();
  pkcs11 = undefined;
  renameSync(fresh, cacheFile);
  console.log("warm-code-cache: build/helper-main.cache now holds the functions a client's first calls compile");
} catch (error) {
  console.warn(`warm-code-cache: skipped (${error instanceof Error ? error.message : String(error)}); the top-level code cache stays`);
  try {
    pkcs11?.C_Finalize();
  } catch {
    // Already finalized or never initialized.
  }
} finally {
  stopEmulator?.();
  rmSync(dir, { recursive: true, force: true });
}
