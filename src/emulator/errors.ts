// Key Vault's error envelope: {"error":{"code","message","innererror":{"code"}}}. Handlers throw KeyVaultError and
// the server turns it into a response, so every refusal carries the service's status, code and wording.

export class KeyVaultError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly innerCode?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "KeyVaultError";
  }

  body(): object {
    const error: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.innerCode) error.innererror = { code: this.innerCode };
    return { error };
  }
}

export const badParameter = (message: string): KeyVaultError => new KeyVaultError(400, "BadParameter", message);

export const keyNotFound = (name: string, version?: string): KeyVaultError =>
  new KeyVaultError(
    404,
    "KeyNotFound",
    version
      ? `A key with (name/id) ${name}/${version} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`
      : `A key with (name/id) ${name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
  );

export const deletedKeyNotFound = (name: string): KeyVaultError =>
  new KeyVaultError(404, "KeyNotFound", `Deleted Key not found: ${name}`);

export const certificateNotFound = (name: string, version?: string): KeyVaultError =>
  new KeyVaultError(
    404,
    "CertificateNotFound",
    `A certificate with (name/id) ${version ? `${name}/${version}` : name} was not found in this key vault. If you recently deleted this certificate you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
  );

export const secretNotFound = (name: string, version?: string): KeyVaultError =>
  new KeyVaultError(
    404,
    "SecretNotFound",
    `A secret with (name/id) ${version ? `${name}/${version}` : name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
  );

export const deletedSecretNotFound = (name: string): KeyVaultError => new KeyVaultError(404, "SecretNotFound", `Deleted Secret not found: ${name}`);

/** A name in the deleted-but-recoverable state cannot be reused (keys and secrets alike). */
export const deletedNameConflict = (kind: "Key" | "Secret", name: string): KeyVaultError =>
  new KeyVaultError(
    409,
    "Conflict",
    `${kind} ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the ${kind.toLowerCase()} can only be recovered or purged.`,
  );

/** Key Vault's access-policy refusal; `permission` is e.g. "keys/create". */
export function forbiddenByPolicy(permission: string, caller: { appid: string; oid: string; iss: string }, vaultName: string): KeyVaultError {
  const [collection, action] = permission.split("/") as [string, string];
  return new KeyVaultError(
    403,
    "Forbidden",
    `The user, group or application 'appid=${caller.appid};oid=${caller.oid};iss=${caller.iss}' does not have ${collection} ${action} permission on key vault '${vaultName};location=emulator'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287`,
    "ForbiddenByPolicy",
  );
}
