// SunPKCS11 (OpenJDK 17) as a long-lived host when the module's helper dies (issue #9): RespawnSigner.java
// configures the provider, loads the PKCS11 KeyStore and takes the private key once, then signs on request with
// those same objects. The module is loaded through OpenSC's pkcs11-spy, which records every call SunPKCS11 makes
// and what it got. The test SIGKILLs the helper between two signatures: the second must succeed with the same
// provider and key objects, run on a new helper, and verify against the vault's JWK.
import test from "ava";
import { verify } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { repoRoot, startClientFixture, type ClientFixture } from "./harness.ts";
import { childrenOf, describeCalls, describeTree, helpersOf, isZombie, killAndWaitDead, PRIVATE_HELPER, parseSpyLog, processTable, respawnLines, sessionsAcross, slotIdOf, startLineHost } from "./respawn.ts";

const SPY = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";
const ALGORITHM = { rsa: "SHA256withRSA", ec: "SHA256withECDSA" } as const;

let fixture: ClientFixture;
let classes: string;

test.before(async () => {
  fixture = await startClientFixture();
  classes = fixture.file("java-classes");
  await fixture.runOk("javac", ["-d", classes, path.join(repoRoot, "test/clients/RespawnSigner.java")], { timeoutMs: 120_000 });
});

test.after.always(async () => {
  await fixture?.close();
});

// The SoftHSM backend has no helper to kill.
const kinds = process.env.AKV_CLIENT_TESTS_BACKEND === "softhsm" ? [] : (["rsa", "ec"] as const);

for (const kind of kinds) {
  test(`SunPKCS11 keeps signing with the ${kind} key after the helper is killed`, async (t) => {
    const key = fixture[kind];
    const config = fixture.file(`sunpkcs11-respawn-${kind}.cfg`);
    // The spy loads the module named by PKCS11SPY; SunPKCS11 sees the same slots through it.
    await writeFile(config, `name = akv-respawn-${kind}\nlibrary = ${SPY}\nslot = ${await slotIdOf(fixture.modulePath, key.tokenLabel, fixture.env)}\n`);
    const spyLog = fixture.file(`sunpkcs11-spy-${kind}.log`);
    const host = startLineHost("java", ["-cp", classes, "RespawnSigner", config, key.keyName, ALGORITHM[kind]], {
      env: { ...fixture.env, ...PRIVATE_HELPER, AZURE_KEYVAULT_PKCS11_DEBUG: "1", PKCS11SPY: fixture.modulePath, PKCS11SPY_OUTPUT: spyLog },
      cwd: fixture.dir,
    });
    try {
      t.regex(await host.nextLine(90_000), /^READY \d+$/, host.stderrTail());
      const spyCalls = async () => parseSpyLog(await readFile(spyLog, "utf8"));
      const sign = async (message: Buffer): Promise<Buffer> => {
        const answer = await host.ask(`sign ${message.toString("base64")}`, 60_000);
        const signed = /^SIGNED (\S+)$/.exec(answer);
        if (!signed) throw new Error(`SunPKCS11 answered "${answer}"\n--- spy log (last calls) ---\n${describeCalls((await spyCalls()).slice(-20))}\n--- stderr (end) ---\n${host.stderrTail()}`);
        return Buffer.from(signed[1] as string, "base64");
      };

      const before = Buffer.from(`SunPKCS11 ${kind} before the helper dies`);
      t.true(verify("sha256", before, key.publicKey, await sign(before)), "the first signature verifies against the vault's key");

      const table = await processTable();
      const [helper, ...others] = helpersOf(table, host.pid);
      t.truthy(helper, describeTree(table, [host.pid]));
      t.is(others.length, 0, describeTree(table, [host.pid]));
      const callsBeforeKill = (await spyCalls()).length;
      const stderrAtKill = host.stderr().length;
      await killAndWaitDead([helper?.pid as number]);

      const after = Buffer.from(`SunPKCS11 ${kind} after the helper died`);
      const signatureAfter = await sign(after);
      t.true(verify("sha256", after, key.publicKey, signatureAfter), "the signature after the kill verifies against the vault's key");
      t.false(verify("sha256", before, key.publicKey, signatureAfter), "and not over another message: the check can fail");
      t.is(await host.ask("aliases"), `ALIASES ${key.keyName}`, "the same KeyStore still lists the key");
      const again = Buffer.from(`SunPKCS11 ${kind} once more`);
      t.true(verify("sha256", again, key.publicKey, await sign(again)));

      const tableAfter = await processTable();
      const helpersAfter = helpersOf(tableAfter, host.pid);
      t.is(helpersAfter.length, 1, describeTree(tableAfter, [host.pid]));
      t.not(helpersAfter[0]?.pid, helper?.pid, "a new helper");
      t.deepEqual(childrenOf(tableAfter, host.pid).filter(isZombie), [], describeTree(tableAfter, [host.pid]));

      const calls = await spyCalls();
      const afterKill = calls.slice(callsBeforeKill);
      t.log(`SunPKCS11 (${kind}) calls after the kill:\n${describeCalls(afterKill)}`);
      t.deepEqual(afterKill.filter((call) => call.rv !== "CKR_OK"), [], describeCalls(afterKill));
      // The sessions open at the kill keep their handles: the host uses them afterwards, and they answer CKR_OK.
      const sessions = sessionsAcross(calls, callsBeforeKill);
      t.log(`sessions open at the kill: ${sessions.openAtKill.join(", ")}; used again after it: ${sessions.reused.join(", ")}; opened after it: ${sessions.openedAfter.join(", ") || "none"}`);
      t.true(sessions.reused.length > 0, `SunPKCS11 uses a session it opened before the kill`);
      const signSessions = new Set(calls.filter((call) => call.name === "C_SignInit").map((call) => `${call.session}/${call.object}`));
      t.log(`C_SignInit (session/key) before and after the kill: ${[...signSessions].join(", ")}`);
      t.log(`helper ${helper?.pid} killed, new helper ${helpersAfter[0]?.pid}; the module said:\n${respawnLines(host.stderr().slice(stderrAtKill)).join("\n")}`);
      t.is(await host.stop(), "exit 0", host.stderrTail());
    } finally {
      await host.stop();
    }
  });
}
