// `azure-keyvault-pkcs11 list [--json]`: every token and object the module shows, with its RFC 7512 URI. It runs the
// helper's own PKCS#11 core in this process (Pkcs11Module, the tokens and their objects), so the list is what any
// PKCS#11 application sees through the module, without p11tool or pkcs11-tool.
import { parseJsonOption } from "./report.ts";
import { CKA } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { rvName } from "../pkcs11/constants.ts";
import { Pkcs11Module, privateVaultSource } from "../helper/module.ts";
import { PROTOCOL_VERSION } from "../protocol/functions.ts";
import type { FoundObject } from "../token/token.ts";
import { ConfigError } from "../config/types.ts";

const USAGE = `usage: azure-keyvault-pkcs11 list [--json]

Lists the tokens and objects the module shows with the current configuration and credentials, with the PKCS#11 URI
(RFC 7512) of each. --json prints {tokens: [{slot, label, manufacturer, model, serial, uri, error?, objects: [...]}]}.
`;

/** CK_ULONG as the core encodes it for a 64-bit host; any size works here, since nothing leaves this process. */
const ULONG_SIZE = 8;

export interface ListedObject {
  /** "private" | "public" | "cert" | "secret-key", as in the URI's type= */
  type: "private" | "public" | "cert" | "secret-key";
  class: "CKO_PRIVATE_KEY" | "CKO_PUBLIC_KEY" | "CKO_CERTIFICATE" | "CKO_SECRET_KEY";
  label: string;
  /** CKA_ID, lower-case hex. */
  id: string;
  keyType?: "RSA" | "EC" | "AES";
  /** RSA modulus bits, or the EC curve's order bits. */
  keyBits?: number;
  curve?: string;
  /** CKO_CERTIFICATE: the key's own certificate (user) or a CA certificate from certificate_path (authority). */
  certificateCategory?: "user" | "authority";
  uri: string;
}

export interface ListedToken {
  slot: number;
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  uri: string;
  /** Why the token shows no objects (the vault call that failed, and the CK_RV an application gets). */
  error?: string;
  objects: ListedObject[];
}

/** RFC 7512 percent-encoding: everything outside the unreserved characters, so the URI is valid wherever it goes. */
export function uriEncode(value: string | Buffer): string {
  const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : value;
  let out = "";
  for (const byte of bytes) {
    const char = String.fromCharCode(byte);
    out += typeof value === "string" && /[A-Za-z0-9\-._~]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

const OBJECT_TYPES = {
  private: { type: "private", class: "CKO_PRIVATE_KEY" },
  public: { type: "public", class: "CKO_PUBLIC_KEY" },
  certificate: { type: "cert", class: "CKO_CERTIFICATE" },
  authority: { type: "cert", class: "CKO_CERTIFICATE" },
  secret: { type: "secret-key", class: "CKO_SECRET_KEY" },
} as const;

export async function listTokens(env: NodeJS.ProcessEnv): Promise<ListedToken[]> {
  const module = new Pkcs11Module(privateVaultSource(env));
  await module.initialize(PROTOCOL_VERSION, ULONG_SIZE);
  try {
    const tokens: ListedToken[] = [];
    for (const slotId of module.slotIds()) {
      const info = module.tokenInfo(slotId);
      // p11tool's order of the token attributes, so that URIs look the same as the ones it prints.
      const tokenUri = `pkcs11:model=${uriEncode(info.model)};manufacturer=${uriEncode(info.manufacturer)};serial=${uriEncode(info.serial)};token=${uriEncode(info.label)}`;
      const listed: ListedToken = { slot: slotId, label: info.label, manufacturer: info.manufacturer, model: info.model, serial: info.serial, uri: tokenUri, objects: [] };
      tokens.push(listed);
      const token = module.token(slotId);
      let objects: FoundObject[];
      try {
        // What a C_FindObjectsInit with an empty template waits for: the key, and a certificate still pending.
        const handles = await token.find([]);
        objects = await Promise.all(handles.map((handle) => token.object(handle)));
      } catch (error) {
        listed.error = error instanceof Pkcs11Error ? `${error.message === rvName(error.rv) ? "" : `${error.message}: `}${rvName(error.rv)}` : String(error);
        continue;
      }
      if (token.problem) listed.error = token.problem;
      for (const { object, material, secret } of objects) {
        const kind = OBJECT_TYPES[object.kind];
        const label = object.attributes.get(CKA.LABEL)?.toString("utf8") ?? "";
        const id = object.attributes.get(CKA.ID) ?? Buffer.alloc(0);
        const entry: ListedObject = {
          type: kind.type,
          class: kind.class,
          label,
          id: id.toString("hex"),
          uri: `${tokenUri};id=${uriEncode(id)};object=${uriEncode(label)};type=${kind.type}`,
        };
        if ((object.kind === "private" || object.kind === "public") && material) {
          entry.keyType = material.kind;
          entry.keyBits = material.keyBits;
          if (material.ec) entry.curve = material.ec.curve.name;
        } else if (object.kind === "secret") {
          entry.keyType = "AES";
          if (secret?.length !== undefined) entry.keyBits = secret.length * 8;
        } else {
          entry.certificateCategory = object.kind === "certificate" ? "user" : "authority";
        }
        listed.objects.push(entry);
      }
    }
    return tokens;
  } finally {
    await module.initialized.backend.close();
    module.finalize();
  }
}

function formatToken(token: ListedToken): string {
  const lines = [`slot ${token.slot}: token '${token.label}' (${token.model}, serial ${token.serial})`, `  ${token.uri}`];
  if (token.error) lines.push(`  no objects: ${token.error}`);
  for (const object of token.objects) {
    const what = object.keyType ? `${object.keyType} ${object.curve ?? object.keyBits}` : `X.509 (${object.certificateCategory})`;
    lines.push(`  ${object.class.padEnd(15)} ${what.padEnd(12)} label '${object.label}' id ${object.id}`, `    ${object.uri}`);
  }
  return `${lines.join("\n")}\n`;
}

export async function runListCommand(argv: string[]): Promise<number> {
  const json = parseJsonOption(argv, "list", USAGE);
  if (typeof json === "number") return json;
  let tokens: ListedToken[];
  try {
    tokens = await listTokens(process.env);
  } catch (error) {
    // The module logged why (a bad config, key discovery that failed); C_Initialize would fail the same way.
    const reason = error instanceof ConfigError ? error.message : error instanceof Pkcs11Error ? `C_Initialize fails with ${rvName(error.rv)}` : (error as Error).message;
    process.stderr.write(`azure-keyvault-pkcs11 list: ${reason} (run \`azure-keyvault-pkcs11 doctor\` to find out why)\n`);
    return 1;
  }
  if (json) process.stdout.write(`${JSON.stringify({ tokens }, null, 2)}\n`);
  else if (tokens.length === 0) process.stdout.write("no tokens\n");
  else process.stdout.write(tokens.map(formatToken).join(""));
  return tokens.some((token) => token.error !== undefined) ? 1 : 0;
}
