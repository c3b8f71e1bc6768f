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
