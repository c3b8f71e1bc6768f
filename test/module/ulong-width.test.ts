// A host whose CK_ULONG is 4 bytes (a 32-bit Linux program): the shim built with -m32 talks to the same helper,
// which must size and encode every CK_ULONG for that host. A 32-bit driver (ulong-driver.c) reads the key's
// attributes, asks the length rules' questions and signs; the test checks the values against the vault's JWK and
// verifies each signature with node:crypto. Needs a 32-bit toolchain (gcc-multilib, installed by
// scripts/setup.sh --with-clients); on hosts other than x86-64 there is no -m32, so no test is registered there.
import test from "ava";
import { execFileSync } from "node:child_process";
import { verify } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { compileDriver, runHost, rv as CKR } from "../native/driver.ts";
import { repoRoot, startModuleFixture, type ModuleFixture } from "./harness.ts";

const ALL_ONES_32 = "0xffffffff";
const UNAVAILABLE_32 = "-1"; // CK_UNAVAILABLE_INFORMATION as the driver prints a 32-bit ulValueLen: (long)0xffffffff
const MESSAGE = "signed by a host with a 4-byte CK_ULONG";

let fixture: ModuleFixture;
let module32: string;
let driver32: string;

/** The shim for a 32-bit host, built with plain CMake as a packager would, running this checkout's helper. */
function buildShim32(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "akv-shim32-"));
  execFileSync("cmake", [
    "-S", path.join(repoRoot, "native"), "-B", dir, "-G", "Ninja", "-DCMAKE_C_FLAGS=-m32", "-DCMAKE_SHARED_LINKER_FLAGS=-m32",
    `-DAKV_OUTPUT_DIR=${dir}`, `-DAKV_HELPER_PATH=${path.join(repoRoot, "build", "helper.cjs")}`, `-DAKV_NODE_PATH=${process.execPath}`,
  ], { stdio: "pipe" });
  execFileSync("cmake", ["--build", dir], { stdio: "pipe" });
  return path.join(dir, "azure-keyvault-pkcs11.so");
}

if (process.arch === "x64") {
  test.before(async () => {
    fixture = await startModuleFixture({ keys: "u-rsa:RSA:2048,u-ec:EC:P-256", skipInitialize: true });
    module32 = buildShim32();
    driver32 = compileDriver(path.join(repoRoot, "test", "module", "ulong-driver.c"), ["-m32"]);
  });
  test.after.always(() => fixture?.close());

  for (const [name, kind] of [["u-rsa", "RSA"], ["u-ec", "EC"]] as const) {
    test(`a 4-byte CK_ULONG host reads the ${kind} key's attributes and its ${kind} signature verifies`, async (t) => {
      const { values: v } = await runHost(driver32, [module32, name, MESSAGE]);
      t.is(v.get("done"), "1");
      t.is(v.get("sizeofUlong"), "4");
      t.is(v.get("Initialize"), CKR.OK);
      t.is(v.get("slots"), "2");
      t.is(v.get("found"), "1");
      t.is(v.get("token.maxSessionCount"), "0x0", "CK_EFFECTIVELY_INFINITE");
      t.is(v.get("token.totalPublicMemory"), ALL_ONES_32, "CK_UNAVAILABLE_INFORMATION in 32 bits");
      // Key sizes are CK_ULONGs too; a token offers only its key type's mechanisms.
      const MECHANISM_INVALID = "0x70";
      t.is(v.get("GetMechanismInfo.rsaPkcs"), kind === "RSA" ? CKR.OK : MECHANISM_INVALID);
      t.is(v.get("GetMechanismInfo.ecdsa"), kind === "EC" ? CKR.OK : MECHANISM_INVALID);
      if (kind === "RSA") t.is(v.get("mechanism.rsaPkcs"), "2048-4096");
      else t.is(v.get("mechanism.ecdsa"), "256-521");
      t.is(v.get("keys"), "1");

      // Every CK_ULONG attribute is 4 bytes long for this host; a CK_BBOOL stays 1.
      t.is(v.get("size.class"), "4");
      t.is(v.get("size.keyType"), "4");
      t.is(v.get("size.modulusBits"), kind === "RSA" ? "4" : UNAVAILABLE_32);
      t.is(v.get("size.sign"), "1");
      t.is(v.get("sizes"), kind === "RSA" ? CKR.OK : "0x12", "an EC key has no CKA_MODULUS_BITS: CKR_ATTRIBUTE_TYPE_INVALID");
      t.is(v.get("class"), "3", "CKO_PRIVATE_KEY");
      t.is(v.get("keyType"), kind === "RSA" ? "0" : "3");
      t.is(v.get("tooSmall"), CKR.BUFFER_TOO_SMALL);
      t.is(v.get("tooSmall.length"), UNAVAILABLE_32);

      const jwk = fixture.key(name).jwk;
      if (kind === "RSA") {
        t.is(v.get("rsa"), CKR.OK);
        t.is(v.get("modulusBits"), "2048");
        t.is(v.get("modulus"), Buffer.from(jwk.n!, "base64url").toString("hex").replace(/^(00)+/, ""));
      } else {
        t.is(v.get("ec"), CKR.OK);
        const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
        t.is(v.get("ecPoint"), Buffer.concat([Buffer.from([0x04, point.length]), point]).toString("hex"));
      }
      t.is(v.get("SignInit"), CKR.OK);
      t.is(v.get("Sign.query"), CKR.OK);
      t.is(v.get("Sign.queryLength"), kind === "RSA" ? "256" : "64");
      t.is(v.get("Sign"), CKR.OK);
      const signature = Buffer.from(v.get("signature") ?? "", "hex");
      const publicKey = fixture.key(name).publicKey;
      const valid = kind === "RSA"
        ? verify("sha256", Buffer.from(MESSAGE), publicKey, signature)
        : verify("sha256", Buffer.from(MESSAGE), { key: publicKey, dsaEncoding: "ieee-p1363" }, signature);
      t.true(valid, "the signature must verify against the vault's JWK");
      t.is(v.get("Finalize"), CKR.OK);
    });
  }
}
