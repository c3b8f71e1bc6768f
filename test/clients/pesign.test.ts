// pesign (NSS): the module is added to a fresh NSS database with modutil; pesign -s signs with the key and
// certificate on the token (the certificate's CKA_LABEL is the nickname), then pesign -S and sbverify check it
// against the vault's certificate, fetched from the emulator. The vault's certificates here are code-signing-only,
// as sbverify requires.
import test from "ava";
import { describe, startClientFixture, type ClientFixture } from "./harness.ts";

const unsignedPe = "/usr/lib/shim/shimx64.efi";
let fixture: ClientFixture;
let nssDb: string;

test.before(async () => {
  fixture = await startClientFixture({ certificateUsage: "codeSigning" });
  nssDb = fixture.file("nssdb");
  await fixture.runOk("mkdir", ["-p", nssDb]);
  await fixture.runOk("certutil", ["-N", "--empty-password", "-d", `sql:${nssDb}`]);
  await fixture.runOk("modutil", ["-force", "-dbdir", `sql:${nssDb}`, "-add", "azure-keyvault", "-libfile", fixture.modulePath]);
});

test.after.always(async () => {
  await fixture?.close();
});

/** The token needs no PIN and the child has no terminal, so a PIN prompt fails at once instead of hanging. With the
 * SoftHSM backend the PIN is typed into a pseudo-terminal made by script(1), since pesign reads PINs only from /dev/tty. */
function pesign(args: string[], env: NodeJS.ProcessEnv) {
  if (fixture.pin === undefined) return fixture.run("pesign", args, { env });
  const quoted = ["pesign", ...args].map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(" ");
  // pesign flushes the terminal's input before it prompts, so the PIN is typed after a pause.
  return fixture.run("sh", ["-c", `(sleep 2; printf '%s\\n' "$PIN") | script -qec "$0" /dev/null`, quoted], {
    env: { ...env, PIN: fixture.pin },
  });
}

test("certutil sees the token's certificates and keys through modutil's registration", async (t) => {
  const certs = await fixture.run("certutil", ["-d", `sql:${nssDb}`, "-L", "-h", "all"]);
  t.is(certs.code, 0, describe(certs));
  for (const key of fixture.keys) t.regex(certs.stdout, new RegExp(`^${key.tokenLabel}:${key.keyName}\\s+u,u,u$`, "m"), describe(certs));
});

test("NSS reads the vault's certificate from the token", async (t) => {
  for (const key of fixture.keys) {
    const exported = await fixture.run("certutil", ["-d", `sql:${nssDb}`, "-L", "-n", `${key.tokenLabel}:${key.keyName}`, "-r"]);
    t.is(exported.code, 0, describe(exported));
    t.true(exported.stdoutBytes.equals(key.certificate.raw), `${key.tokenLabel}: the token's certificate is the vault's`);
  }
});

test(`pesign -s signs ${unsignedPe} with the RSA key on the token`, async (t) => {
  const key = fixture.rsa;
  const certificate = key.certificatePath;
  const signed = fixture.file("shimx64-pesign.efi");
  const sign = await pesign(["-i", unsignedPe, "-o", signed, "-s", "-n", `sql:${nssDb}`, "-c", key.keyName, "-t", key.tokenLabel], fixture.env);
  t.is(sign.code, 0, describe(sign));
  const show = await fixture.run("pesign", ["-S", "-i", signed]);
  t.is(show.code, 0, describe(show));
  t.is(key.certificate.subject, `CN=${key.keyName}`);
  t.true(show.stdout.includes(`The signer's common name is ${key.keyName}\n`), describe(show));
  const verify = await fixture.run("sbverify", ["--cert", certificate, signed]);
  t.is(verify.code, 0, describe(verify));
  t.regex(verify.stdout + verify.stderr, /Signature verification OK/, describe(verify));
});
