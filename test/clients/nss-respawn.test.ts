// NSS as a long-lived host when the module's helper dies (issue #9): test/clients/nss-signer.c loads the module
// into NSS once (with NSS's own call log, which records every call NSS makes and what it got), finds the private
// key once and signs with PK11_Sign. The test SIGKILLs the helper between two signatures: the second must
// succeed with the same SECKEYPrivateKey, run on a new helper, and verify against the vault's JWK.
import test from "ava";
import { createHash, verify, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { repoRoot, startClientFixture, type ClientFixture, type ClientKey } from "./harness.ts";
import { childrenOf, describeCalls, describeTree, helpersOf, isZombie, killAndWaitDead, PRIVATE_HELPER, parseNssLog, processTable, respawnLines, sessionsAcross, startLineHost } from "./respawn.ts";

// nss-signer.c names the module so; NSS_DEBUG_PKCS11_MODULE selects it for NSS's call log. (OpenSC 0.23's
// pkcs11-spy crashes in the C_GetInterface call NSS makes, so it cannot be the recorder here.)
const NSS_MODULE_NAME = "akv-respawn";
// DER prefix of a SHA-256 DigestInfo (RFC 8017, section 9.2, note 1).
const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

let fixture: ClientFixture;
let signer: string;

test.before(async () => {
  fixture = await startClientFixture();
  signer = fixture.file("nss-signer");
  const flags = (await fixture.runOk("pkg-config", ["--cflags", "--libs", "nss"])).stdout.trim().split(/\s+/);
  await fixture.runOk("gcc", ["-Wall", "-Wextra", "-Werror", "-o", signer, path.join(repoRoot, "test/clients/nss-signer.c"), ...flags]);
});

test.after.always(async () => {
  await fixture?.close();
});

/** What PK11_Sign signs for a message: a SHA-256 DigestInfo (RSA, CKM_RSA_PKCS) or the hash alone (ECDSA). */
function toBeSigned(key: ClientKey, message: Buffer): Buffer {
  const hash = createHash("sha256").update(message).digest();
  return key.kind === "rsa" ? Buffer.concat([SHA256_DIGEST_INFO, hash]) : hash;
}

function verifies(publicKey: KeyObject, kind: ClientKey["kind"], message: Buffer, signature: Buffer): boolean {
  return verify("sha256", message, kind === "rsa" ? publicKey : { key: publicKey, dsaEncoding: "ieee-p1363" }, signature);
}

// The SoftHSM backend has no helper to kill.
const kinds = process.env.AKV_CLIENT_TESTS_BACKEND === "softhsm" ? [] : (["rsa", "ec"] as const);

for (const kind of kinds) {
  test(`NSS keeps signing with the ${kind} key after the helper is killed`, async (t) => {
    const key = fixture[kind];
    const callLog = fixture.file(`nss-calls-${kind}.log`);
    const host = startLineHost(signer, [fixture.modulePath, key.tokenLabel], {
      env: { ...fixture.env, ...PRIVATE_HELPER, AZURE_KEYVAULT_PKCS11_DEBUG: "1", NSS_DEBUG_PKCS11_MODULE: NSS_MODULE_NAME, NSPR_LOG_MODULES: "nss_mod_log:4", NSPR_LOG_FILE: callLog },
      cwd: fixture.dir,
    });
    try {
      const ready = /^READY (\d+) (\d+)$/.exec(await host.nextLine(60_000));
      t.truthy(ready, host.stderrTail());
      const sign = async (message: Buffer): Promise<Buffer> => {
        const answer = await host.ask(`sign ${toBeSigned(key, message).toString("hex")}`, 60_000);
        const signed = /^SIGNED ([0-9a-f]+)$/.exec(answer);
        if (!signed) throw new Error(`NSS answered "${answer}"\n--- NSS call log (last calls) ---\n${describeCalls(parseNssLog(await readFile(callLog, "utf8")).slice(-20))}\n--- stderr (end) ---\n${host.stderrTail()}`);
        return Buffer.from(signed[1] as string, "hex");
      };

      const before = Buffer.from(`NSS ${kind} before the helper dies`);
      t.true(verifies(key.publicKey, kind, before, await sign(before)), "the first signature verifies against the vault's key");

      const table = await processTable();
      const [helper, ...others] = helpersOf(table, host.pid);
      t.truthy(helper, describeTree(table, [host.pid]));
      t.is(others.length, 0, describeTree(table, [host.pid]));
      const callsBeforeKill = parseNssLog(await readFile(callLog, "utf8")).length;
      const stderrAtKill = host.stderr().length;
      await killAndWaitDead([helper?.pid as number]);

      const after = Buffer.from(`NSS ${kind} after the helper died`);
      const signatureAfter = await sign(after);
      t.true(verifies(key.publicKey, kind, after, signatureAfter), "the signature after the kill verifies against the vault's key");
      t.false(verifies(key.publicKey, kind, before, signatureAfter), "and not over another message: the check can fail");
      const again = Buffer.from(`NSS ${kind} once more`);
      t.true(verifies(key.publicKey, kind, again, await sign(again)));

      const tableAfter = await processTable();
      const helpersAfter = helpersOf(tableAfter, host.pid);
      t.is(helpersAfter.length, 1, describeTree(tableAfter, [host.pid]));
      t.not(helpersAfter[0]?.pid, helper?.pid, "a new helper");
      t.deepEqual(childrenOf(tableAfter, host.pid).filter(isZombie), [], describeTree(tableAfter, [host.pid]));

      const calls = parseNssLog(await readFile(callLog, "utf8"));
      const afterKill = calls.slice(callsBeforeKill);
      t.log(`NSS (${kind}) calls after the kill:\n${describeCalls(afterKill)}`);
      t.deepEqual(afterKill.filter((call) => call.rv !== "CKR_OK"), [], describeCalls(afterKill));
      // The sessions open at the kill keep their handles: the host uses them afterwards, and they answer CKR_OK.
      const sessions = sessionsAcross(calls, callsBeforeKill);
      t.log(`sessions open at the kill: ${sessions.openAtKill.join(", ")}; used again after it: ${sessions.reused.join(", ")}; opened after it: ${sessions.openedAfter.join(", ") || "none"}`);
      t.true(sessions.reused.length > 0, `NSS uses a session it opened before the kill`);
      const keyHandles = new Set(calls.filter((call) => call.name === "C_SignInit").map((call) => call.object));
      t.is(keyHandles.size, 1, `NSS signs with the key handle it found before the kill: ${[...keyHandles].join(", ")}`);
      t.log(`helper ${helper?.pid} killed, new helper ${helpersAfter[0]?.pid}; the module said:\n${respawnLines(host.stderr().slice(stderrAtKill)).join("\n")}`);
      t.is(await host.stop(), "exit 0", host.stderrTail());
    } finally {
      await host.stop();
    }
  });
}
