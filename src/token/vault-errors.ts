// The one place where a failed vault call becomes a PKCS#11 return value, with one log line per failure.
import { VaultError } from "../vault/types.ts";
import { CKR, rvName } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { log } from "../log/log.ts";

export type VaultOperation = "load" | "sign" | "decrypt" | "encrypt" | "wrap" | "unwrap" | "random" | "list" | WriteOperation;
/** Operations that change the vault (C_GenerateKeyPair, C_CreateObject, C_SetAttributeValue, C_DestroyObject). */
export type WriteOperation = "create" | "import" | "update" | "delete" | "store certificate" | "delete certificate";

/** The access-policy permission and the RBAC role each write needs (docs/vault-tokens.md#permissions). */
export const WRITE_PERMISSIONS: Record<WriteOperation, string> = {
  create: "keys/create (RBAC: Key Vault Crypto Officer; Managed HSM: Managed HSM Crypto Officer)",
  import: "keys/import (RBAC: Key Vault Crypto Officer; Managed HSM: Managed HSM Crypto Officer)",
  update: "keys/update (RBAC: Key Vault Crypto Officer; Managed HSM: Managed HSM Crypto Officer)",
  delete: "keys/delete (RBAC: Key Vault Crypto Officer; Managed HSM: Managed HSM Crypto Officer)",
  "store certificate": "secrets/set (RBAC: Key Vault Secrets Officer)",
  "delete certificate": "secrets/delete (RBAC: Key Vault Secrets Officer)",
};

const isWrite = (operation: VaultOperation): operation is WriteOperation => operation in WRITE_PERMISSIONS;


function rvFor(error: VaultError, operation: VaultOperation): number {
  switch (error.kind) {
    case "not-found":
      // The key behind the token is gone: for the application, the device went away.
      return CKR.DEVICE_REMOVED;
    case "forbidden":
      return operation === "load" || operation === "list" ? CKR.DEVICE_ERROR : CKR.FUNCTION_REJECTED;
    case "conflict":
      // The name the template asked for (CKA_LABEL, or the slot's key_name) is taken: it is never overwritten.
      return operation === "create" || operation === "import" ? CKR.ATTRIBUTE_VALUE_INVALID : CKR.FUNCTION_FAILED;
    case "bad-parameter":
      // The vault refuses a ciphertext, tag, pad or wrapped key it cannot open with a 400.
      return operation === "decrypt" ? CKR.ENCRYPTED_DATA_INVALID : operation === "unwrap" ? CKR.WRAPPED_KEY_INVALID : CKR.FUNCTION_FAILED;
    case "auth":
    case "throttled":
    case "network":
    case "timeout":
    case "other":
      return CKR.DEVICE_ERROR;
  }
}

const HINTS: Partial<Record<VaultError["kind"], string>> = {
  auth: " (no Azure credential worked: check AZURE_CLI_ACCESS_TOKEN, azureauth.json, environment or managed identity)",
  forbidden: " (the identity lacks permission, or the key's key_ops or enabled flag forbid it)",
  throttled: " (Key Vault throttled the requests and retries ran out)",
};

/** Turns any failure of a vault call into the Pkcs11Error to throw, logging why (once a minute while it repeats). */
export function vaultFailure(error: unknown, label: string, operation: VaultOperation): Pkcs11Error {
  if (error instanceof Pkcs11Error) return error;
  if (error instanceof VaultError) {
    const rv = rvFor(error, operation);
    const status = error.statusCode ? ` HTTP ${error.statusCode}` : "";
    const hint = error.kind === "forbidden" && isWrite(operation) ? ` (this needs ${WRITE_PERMISSIONS[operation]})` : (HINTS[error.kind] ?? "");
    log.errorOncePerMinute(`${label}: ${operation} failed: ${error.kind}${status}: ${error.message}${hint} -> ${rvName(rv)}`);
    return new Pkcs11Error(rv, error.message, { logged: true });
  }
  const message = error instanceof Error ? error.message : String(error);
  log.errorOncePerMinute(`${label}: ${operation} failed unexpectedly: ${message} -> CKR_DEVICE_ERROR`);
  return new Pkcs11Error(CKR.DEVICE_ERROR, message, { logged: true });
}
