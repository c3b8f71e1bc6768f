// Run by auth.test.ts in a child process: gets a key with a real credential, configured from the environment only
// (no tlsOptions: TLS trust must come from NODE_EXTRA_CA_CERTS), and prints {"kty": ...} on stdout.
import { ClientSecretCredential, DefaultAzureCredential } from "@azure/identity";
import { KeyClient } from "@azure/keyvault-keys";

const mode = process.argv[2];
const vaultUrl = process.env.AZURE_KEYVAULT_URL!;
const credential =
  mode === "client-secret"
    ? new ClientSecretCredential(process.env.AZURE_TENANT_ID!, process.env.AZURE_CLIENT_ID!, process.env.AZURE_CLIENT_SECRET!, {
        authorityHost: process.env.AZURE_AUTHORITY_HOST!,
        disableInstanceDiscovery: true,
      })
    : new DefaultAzureCredential();
const client = new KeyClient(vaultUrl, credential, { disableChallengeResourceVerification: true, retryOptions: { maxRetries: 0 } });
try {
  const key = await client.getKey("rsa-key");
  process.stdout.write(JSON.stringify({ kty: key.keyType }));
} catch (error) {
  process.stderr.write(`${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}\n`);
  process.exitCode = 1;
}
