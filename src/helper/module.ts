// The helper's PKCS#11 state between C_Initialize and C_Finalize: configuration, vault backend, tokens and
// sessions. General-purpose, slot and token functions live here; session operations in src/session/.
import { randomBytes } from "node:crypto";
import { loadConfig, discoverSlots } from "../config/index.ts";
import { ConfigError } from "../config/types.ts";
import { createVaultBackend } from "../vault/index.ts";
import type { VaultBackend } from "../vault/types.ts";
import { log } from "../log/log.ts";
import { CK_EFFECTIVELY_INFINITE, CK_UNAVAILABLE_INFORMATION, CKF, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import { PROTOCOL_VERSION } from "../protocol/functions.ts";
import { mechanismSpec, flagsForKey, mechanismsForKey } from "../mechanisms/table.ts";
import { Token } from "../token/token.ts";
import { vaultFailure } from "../token/vault-errors.ts";
import { SessionTable } from "../session/sessions.ts";
import { Operations } from "../session/operations.ts";
import type { Session } from "../session/session.ts";

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

export interface InitializedState {
  ulongSize: number;
  backend: VaultBackend;
  tokens: Token[];
  sessions: SessionTable;
  operations: Operations;
}

export class Pkcs11Module {
  private state: InitializedState | undefined;

  get initialized(): InitializedState {
    if (!this.state) throw new Pkcs11Error(CKR.CRYPTOKI_NOT_INITIALIZED);
    return this.state;
  }

  async initialize(protocolVersion: number, ulongSize: number): Promise<void> {
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
    let config;
    try {
      config = loadConfig();
    } catch (error) {
      if (error instanceof ConfigError) {
        log.error(error.message);
        throw new Pkcs11Error(CKR.GENERAL_ERROR);
      }
      throw error;
    }
    const configured = performance.now();
    const backend = createVaultBackend(config);
    const backendReady = performance.now();
    let slots;
    try {
      slots = await discoverSlots(config, backend);
    } catch (error) {
      throw vaultFailure(error, config.defaultVaultUrl ?? "key discovery", "load");
    }
    if (slots.length === 0) log.info(`no tokens: ${config.source ? `${config.source} lists no slots` : "no config file found"} and AZURE_KEYVAULT_URL is not set`);
    const tokens = slots.map((slot, index) => new Token(index, slot, backend, ulongSize));
    // Keys and certificates load in the background: C_Initialize stays fast, and the first use waits only
    // for what is still in flight.
    for (const token of tokens) token.prefetch();
    const operations = new Operations(backend, ulongSize);
    this.state = { ulongSize, backend, tokens, sessions: new SessionTable(), operations };
    log.debug(
      `initialized: ${tokens.length} token(s), sizeof(CK_ULONG) = ${ulongSize}; config ${(configured - started).toFixed(1)} ms, ` +
        `backend ${(backendReady - configured).toFixed(1)} ms, slots ${(performance.now() - backendReady).toFixed(1)} ms`,
    );
  }

  /** The helper exits right after replying (src/helper/serve.ts), which closes the vault connections. */
  finalize(): void {
    this.initialized.sessions.clear();
    this.state = undefined;
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

  async mechanismList(slotId: number): Promise<number[]> {
    const token = this.token(slotId);
    const loaded = token.current ?? (await token.load());
    return mechanismsForKey(loaded.material);
  }

  async mechanismInfo(slotId: number, type: number): Promise<{ minKeySize: number; maxKeySize: number; flags: number }> {
    const token = this.token(slotId);
    const spec = mechanismSpec(type);
    if (!spec) throw new Pkcs11Error(CKR.MECHANISM_INVALID);
    const loaded = token.current ?? (await token.load());
    const flags = flagsForKey(spec, loaded.material);
    if (flags === undefined) throw new Pkcs11Error(CKR.MECHANISM_INVALID);
    return { minKeySize: spec.minKeyBits, maxKeySize: spec.maxKeyBits, flags };
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
