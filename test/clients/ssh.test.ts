// OpenSSH: ssh-keygen -D lists the token's keys; a private ssh-agent loads the module with ssh-add -s; ssh-keygen
// -Y sign signs through the agent and ssh-keygen -Y verify checks the signature against the vault's public key.
import test from "ava";
import { existsSync } from "node:fs";
import { chmod, realpath, writeFile } from "node:fs/promises";
import { describe, startClientFixture, startDaemon, waitFor, type ClientFixture, type ClientKey, type Daemon } from "./harness.ts";

let fixture: ClientFixture;
let agent: Daemon | undefined;
let agentSocket: string;
const sshPublicKeys = new Map<string, string>();

/** The vault's public key in OpenSSH form ("ssh-rsa AAAA…"), converted by ssh-keygen from the JWK-derived PEM. */
async function sshPublicKeyFromVault(key: ClientKey): Promise<string> {
  const result = await fixture.runOk("ssh-keygen", ["-i", "-m", "PKCS8", "-f", key.publicKeyPath]);
  const [type, blob] = result.stdout.trim().split(/\s+/);
  return `${type} ${blob}`;
}

test.before(async () => {
  fixture = await startClientFixture();
  for (const key of fixture.keys) sshPublicKeys.set(key.kind, await sshPublicKeyFromVault(key));
  await writeFile(fixture.file("message.txt"), "azure-keyvault-pkcs11 client test: ssh\n");
  // ssh-add -s always asks for a PIN; the Key Vault tokens need none, so the askpass answers an empty line.
  const askpass = fixture.file("askpass.sh");
  await writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' '${fixture.pin ?? ""}'\n`);
  await chmod(askpass, 0o755);
  agentSocket = fixture.file("agent.sock");
  // ssh-agent only loads modules matching -P, compared after resolving symlinks.
  agent = startDaemon("ssh-agent", ["-D", "-a", agentSocket, "-P", await realpath(fixture.modulePath)], { env: fixture.env });
  await waitFor(() => existsSync(agentSocket) || agent?.child.exitCode !== null, 10_000, "ssh-agent's socket");
  if (!existsSync(agentSocket)) throw new Error(`ssh-agent did not start:\n${agent.output()}`);
});

test.after.always(async () => {
  await agent?.stop();
  await fixture?.close();
});

function agentEnv(): NodeJS.ProcessEnv {
  return {
    ...fixture.env,
    SSH_AUTH_SOCK: agentSocket,
    SSH_ASKPASS: fixture.file("askpass.sh"),
    SSH_ASKPASS_REQUIRE: "force",
    DISPLAY: ":0",
  };
}

test.serial("ssh-keygen -D lists the vault's RSA and EC public keys", async (t) => {
  const result = await fixture.run("ssh-keygen", ["-D", fixture.modulePath]);
  t.is(result.code, 0, describe(result));
  const listed = result.stdout.split("\n").map((line) => line.trim().split(/\s+/).slice(0, 2).join(" "));
  for (const key of fixture.keys) t.true(listed.includes(sshPublicKeys.get(key.kind) as string), `${key.kind} missing\n${describe(result)}`);
});

test.serial("ssh-add -s loads the module into a private ssh-agent", async (t) => {
  const add = await fixture.run("ssh-add", ["-s", fixture.modulePath], { env: agentEnv(), timeoutMs: 60_000 });
  t.is(add.code, 0, `${describe(add)}\n--- ssh-agent ---\n${agent?.output()}`);
  t.regex(add.stderr, /Card added/, describe(add));
  const list = await fixture.run("ssh-add", ["-L"], { env: agentEnv() });
  t.is(list.code, 0, describe(list));
  const listed = list.stdout.split("\n").map((line) => line.trim().split(/\s+/).slice(0, 2).join(" "));
  for (const key of fixture.keys) t.true(listed.includes(sshPublicKeys.get(key.kind) as string), `${key.kind} missing\n${describe(list)}`);
});

for (const kind of ["rsa", "ec"] as const) {
  test.serial(`ssh-keygen -Y sign through the agent with the ${kind} key verifies with ssh-keygen -Y verify`, async (t) => {
    const publicKey = sshPublicKeys.get(kind) as string;
    const publicKeyFile = fixture.file(`${kind}.ssh.pub`);
    await writeFile(publicKeyFile, `${publicKey}\n`);
    const message = fixture.file(`message-${kind}.txt`);
    await writeFile(message, `azure-keyvault-pkcs11 client test: ssh ${kind}\n`);
    const sign = await fixture.run("ssh-keygen", ["-Y", "sign", "-f", publicKeyFile, "-n", "file", message], { env: agentEnv() });
    t.is(sign.code, 0, `${describe(sign)}\n--- ssh-agent ---\n${agent?.output()}`);
    const allowedSigners = fixture.file(`allowed-signers-${kind}`);
    await writeFile(allowedSigners, `signer@example.test ${publicKey}\n`);
    const verify = await fixture.run("ssh-keygen", ["-Y", "verify", "-f", allowedSigners, "-I", "signer@example.test", "-n", "file", "-s", `${message}.sig`], {
      input: `azure-keyvault-pkcs11 client test: ssh ${kind}\n`,
    });
    t.is(verify.code, 0, describe(verify));
    t.regex(verify.stdout, /Good "file" signature for signer@example\.test/, describe(verify));
    const tampered = await fixture.run("ssh-keygen", ["-Y", "verify", "-f", allowedSigners, "-I", "signer@example.test", "-n", "file", "-s", `${message}.sig`], {
      input: "a different message\n",
    });
    t.not(tampered.code, 0, describe(tampered));
  });
}
