// The helper's PKCS#11 state between C_Initialize and C_Finalize: configuration, vault backend, tokens and
// sessions. General-purpose, slot and token functions live here; session operations in src/session/.
import { randomBytes } from "node:crypto";
import { loadConfig } from "../config/index.ts";
import { discoverSlots } from "../token/discover.ts";
import { ConfigError, type ModuleConfig } from "../config/types.ts";
import { createVaultBackend } from "../vault/index.ts";
import type { VaultBackend } from "../vault/types.ts";
import { log } from "../log/log.ts";
import { CK_EFFECTIVELY_INFINITE, CK_UNAVAILABLE_INFORMATION, CKF, CKR, CKU } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { PROTOCOL_VERSION } from "../protocol/functions.ts";
import { mechanismSpec, flagsForKey, mechanismsForKey } from "../mechanisms/table.ts";
import type { Token } from "../token/token.ts";
import { KeyToken } from "../token/key-token.ts";
import { VaultToken } from "../token/vault-token.ts";
import { vaultFailure } from "../token/vault-errors.ts";
import { SessionTable } from "../session/sessions.ts";
import { Operations } from "../session/operations.ts";
import { KeyManagement } from "../session/key-management.ts";
import { SessionObjects } from "../session/session-objects.ts";
import type { Session } from "../session/session.ts";
import { andThen, type Immediate } from "../session/immediate.ts";

export const LIBRARY_MANUFACTURER = "azure-keyvault-pkcs11";
export const LIBRARY_DESCRIPTION = "Azure Key Vault PKCS#11 module";
export const LIBRARY_VERSION = { major: 0, minor: 1 };
export const CRYPTOKI_VERSION = { major: 2, minor: 40 };
export const TOKEN_MANUFACTURER = "Azure Key Vault";
/** PIN lengths reported to tools that insist on a range; any PIN is accepted. */
export const PIN_LENGTH = { min: 0, max: 255 };
const MAX_RANDOM_BYTES = 16 * 1024 * 1024;

export interface TokenInfo {
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  flags: number;
  maxSessions: number;
  sessions: number;
  maxRwSessions: number;
  rwSessions: number;
  maxPin: number;
  minPin: number;
  totalPublic: number;
  freePublic: number;
  totalPrivate: number;
  freePrivate: number;
}

/** A session the application opened on a helper that died (native/recovery.c). */
export interface RestoredSession {
  handle: number;
  slot: number;
  flags: number;
}

export interface RestoredLogin {
  slot: number;
  userType: number;
}

/**
 * A PKCS#11 call makes at most two remote operations one after the other (the key's first load, then the
 * operation itself), so each gets at most half of the shim's call timeout: the helper answers a slow vault with
 * CKR_DEVICE_ERROR before the shim gives up on the helper and replaces it.
 */
export function remoteDeadlineMs(configuredMs: number, callTimeoutMs: number | undefined): number {
  if (!callTimeoutMs) return configuredMs;
  return Math.max(1, Math.min(configuredMs, Math.floor(callTimeoutMs / 2) - 100));
}

export interface InitializedState {
  ulongSize: number;
  backend: VaultBackend;
  tokens: Token[];
  sessions: SessionTable;
  operations: Operations;
  keys: KeyManagement;
  sessionObjects: SessionObjects;
}

/**
 * Where an application's configuration and vault backend come from: loaded afresh for a private helper's one
 * application, or shared by every connection of an agent context (src/agent/).
 */
export interface VaultSource {
  /** Throws ConfigError for a bad configuration. */
  open(callTimeoutMs: number | undefined): { config: ModuleConfig; backend: VaultBackend };
}

/** A private helper: the configuration and credentials of its own environment, read at C_Initialize. */
export function privateVaultSource(env: NodeJS.ProcessEnv = process.env): VaultSource {
  return {
    open(callTimeoutMs) {
      let config = loadConfig(env);
      const timeoutMs = remoteDeadlineMs(config.timeoutMs, callTimeoutMs);
      if (timeoutMs !== config.timeoutMs) {
        log.debug(`remote deadline ${timeoutMs} ms instead of ${config.timeoutMs} ms, to stay inside the module's call timeout of ${callTimeoutMs} ms`);
        config = { ...config, timeoutMs };
      }
      return { config, backend: createVaultBackend(config, { env }) };
    },
  };
}

export class Pkcs11Module {
  private state: InitializedState | undefined;

  constructor(private readonly vault: VaultSource = privateVaultSource()) {}

  get initialized(): InitializedState {
    if (!this.state) throw new Pkcs11Error(CKR.CRYPTOKI_NOT_INITIALIZED);
    return this.state;
  }

  async initialize(protocolVersion: number, ulongSize: number, callTimeoutMs?: number): Promise<void> {
    if (this.state) throw new Pkcs11Error(CKR.CRYPTOKI_ALREADY_INITIALIZED);
    if (protocolVersion !== PROTOCOL_VERSION) {
      log.error(`the module library speaks protocol version ${protocolVersion}, this helper ${PROTOCOL_VERSION}: reinstall so that both come from one build`);
      throw new Pkcs11Error(CKR.GENERAL_ERROR);
    }
    if (ulongSize !== 4 && ulongSize !== 8) {
      log.error(`unsupported sizeof(CK_ULONG) ${ulongSize}`);
      throw new Pkcs11Error(CKR.GENERAL_ERROR);
    }
    const started = performance.now();
    let opened;
    try {
      opened = this.vault.open(callTimeoutMs);
    } catch (error) {
      if (error instanceof ConfigError) {
        log.error(error.message);
        throw new Pkcs11Error(CKR.GENERAL_ERROR);
      }
      throw error;
    }
    const { config, backend } = opened;
    const configured = performance.now();
    let slots;
    try {
      slots = await discoverSlots(config, backend);
    } catch (error) {
      throw vaultFailure(error, config.defaultVaultUrl ?? "key discovery", "load");
    }
    if (slots.length === 0) log.info(`no tokens: ${config.source ? `${config.source} lists no slots` : "no config file found"} and AZURE_KEYVAULT_URL is not set`);
    const tokens: Token[] = slots.map((slot, index) => (slot.kind === "key" ? new KeyToken(index, slot, backend, ulongSize) : new VaultToken(index, slot, backend, ulongSize)));
    // Keys and certificates load in the background: C_Initialize stays fast, and the first use waits only
    // for what is still in flight.
    for (const token of tokens) token.prefetch();
    const sessionObjects = new SessionObjects(ulongSize);
    const operations = new Operations(backend, ulongSize, sessionObjects);
    const sessions = new SessionTable((handle) => sessionObjects.closeSession(handle));
    this.state = { ulongSize, backend, tokens, sessions, sessionObjects, operations, keys: new KeyManagement(ulongSize, backend, sessionObjects) };
    log.debug(
      `initialized: ${tokens.length} token(s), sizeof(CK_ULONG) = ${ulongSize}; config and backend ${(configured - started).toFixed(1)} ms, ` +
        `slots ${(performance.now() - configured).toFixed(1)} ms`,
    );
  }

  /**
   * A private helper exits right after replying (src/helper/serve.ts), which closes the vault connections; an agent
   * context keeps its backend for the next application.
   */
  finalize(): void {
    this.close(this.initialized);
  }

  /** An agent connection that ended without C_Finalize (its host died): the same clean-up, if there was a start. */
  discard(): void {
    if (this.state) this.close(this.state);
  }

  private close(state: InitializedState): void {
    state.sessions.clear();
    state.sessionObjects.clear();
    for (const token of state.tokens) token.stop();
    this.state = undefined;
  }

  /**
   * A replacement helper takes over the application's open sessions, with their handles, slots and flags, and the
   * login state of each slot. Active operations died with the old helper. Runs right after C_Initialize.
   */
  restoreSessions(highestHandle: number, sessions: RestoredSession[], logins: RestoredLogin[]): void {
    const { sessions: table, tokens } = this.initialized;
    // Handles the application once had, and closed, must not come back as another session's.
    table.skipPast(highestHandle);
    const handles = new Set(sessions.map((session) => session.handle));
    if (handles.size !== sessions.length || sessions.some((session) => table.has(session.handle))) {
      throw new Pkcs11Error(CKR.ARGUMENTS_BAD, "a restored session handle is given twice or already in use");
    }
    let dropped = 0;
    for (const { handle, slot, flags } of sessions) {
      const token = tokens[slot];
      // The config may have changed since the old helper started; a session whose slot is gone cannot return.
      if (!token || !Number.isSafeInteger(handle) || handle <= 0) {
        dropped++;
        continue;
      }
      table.restore(handle, token, flags);
    }
    for (const { slot, userType } of logins) {
      const token = tokens[slot];
      if (token && token.sessions.size > 0) token.loginState = userType === CKU.SO ? "so" : "user";
    }
    if (dropped > 0) log.error(`${dropped} session(s) of the previous helper name slots that the configuration no longer has; they are closed`);
    log.debug(`took over ${sessions.length - dropped} session(s) of the previous helper; new sessions are numbered from ${highestHandle + 1}`);
  }

  token(slotId: number): Token {
    const token = this.initialized.tokens[slotId];
    if (!token || !Number.isInteger(slotId)) throw new Pkcs11Error(CKR.SLOT_ID_INVALID);
    return token;
  }

  session(handle: number): Session {
    return this.initialized.sessions.get(handle);
  }

  slotIds(): number[] {
    return this.initialized.tokens.map((token) => token.slotId);
  }

  tokenInfo(slotId: number): TokenInfo {
    const token = this.token(slotId);
    const counts = this.initialized.sessions.counts(token);
    return {
      label: token.label,
      manufacturer: TOKEN_MANUFACTURER,
      model: token.model,
      serial: token.serial,
      // No CKF_LOGIN_REQUIRED: the vault authenticates the Azure identity; no CKF_WRITE_PROTECTED, so that
      // tools which open read/write sessions keep working.
      flags: CKF.TOKEN_INITIALIZED | CKF.USER_PIN_INITIALIZED | CKF.RNG,
      maxSessions: CK_EFFECTIVELY_INFINITE,
      sessions: counts.all,
      maxRwSessions: CK_EFFECTIVELY_INFINITE,
      rwSessions: counts.readWrite,
      maxPin: PIN_LENGTH.max,
      minPin: PIN_LENGTH.min,
      totalPublic: CK_UNAVAILABLE_INFORMATION,
      freePublic: CK_UNAVAILABLE_INFORMATION,
      totalPrivate: CK_UNAVAILABLE_INFORMATION,
      freePrivate: CK_UNAVAILABLE_INFORMATION,
    };
  }

  mechanismList(slotId: number): Immediate<number[]> {
    return andThen(this.token(slotId).offeredKeys(), (keys) => mechanismsForKey(keys));
  }

  mechanismInfo(slotId: number, type: number): Immediate<{ minKeySize: number; maxKeySize: number; flags: number }> {
    const token = this.token(slotId);
    const spec = mechanismSpec(type);
    if (!spec) throw new Pkcs11Error(CKR.MECHANISM_INVALID);
    return andThen(token.offeredKeys(), (keys) => {
      const flags = flagsForKey(spec, keys);
      if (flags === undefined) throw new Pkcs11Error(CKR.MECHANISM_INVALID);
      return { minKeySize: spec.minKeyBits, maxKeySize: spec.maxKeyBits, flags };
    });
  }

  async generateRandom(session: Session, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    // The reply must fit one frame; nobody needs more random bytes than this in one call.
    if (length > MAX_RANDOM_BYTES) throw new Pkcs11Error(CKR.ARGUMENTS_BAD, `C_GenerateRandom of ${length} bytes: at most ${MAX_RANDOM_BYTES} per call`);
    let bytes: Buffer | undefined;
    try {
      bytes = await this.initialized.backend.getRandomBytes(session.token.slot.vaultUrl, length);
    } catch (error) {
      throw vaultFailure(error, session.token.label, "random");
    }
    return bytes ?? randomBytes(length);
  }
}
