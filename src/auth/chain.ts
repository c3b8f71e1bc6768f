// The credential chain with the module's caching rule: every link is tried at most until it answers once.
// The first link that produces a token becomes the only one used from then on; a link that reports itself
// unavailable is never asked again. Other errors (a wrong secret, a broken azureauth.json) stop the chain and
// are reported as they are, since falling through would hide them.
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/core-auth";
import { log } from "../log/log.ts";

export interface CredentialLink {
  /** Shown in logs and errors, e.g. "AZURE_CLI_ACCESS_TOKEN" or "azureauth.json (/etc/...)". */
  name: string;
  /** Built on first use, so that links never reached cost nothing. */
  create(): TokenCredential;
}

/** No link could produce a token. */
export class CredentialChainError extends Error {
  constructor(
    message: string,
    readonly reasons: string[],
  ) {
    super(message);
    this.name = "CredentialChainError";
  }
}

const UNAVAILABLE_ERRORS = new Set(["CredentialUnavailableError", "AggregateAuthenticationError"]);

export function isCredentialUnavailable(error: unknown): boolean {
  return error instanceof Error && UNAVAILABLE_ERRORS.has(error.name);
}

interface LinkState {
  link: CredentialLink;
  credential?: TokenCredential;
  unavailable?: string;
}

export class CachedChainCredential implements TokenCredential {
  private readonly states: LinkState[];
  private selected: LinkState | undefined;

  constructor(links: CredentialLink[]) {
    this.states = links.map((link) => ({ link }));
  }

  /** The link in use, once one has produced a token. */
  get selectedLink(): string | undefined {
    return this.selected?.link.name;
  }

  async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
    if (this.selected) return this.tokenFrom(this.selected, scopes, options);
    const reasons: string[] = [];
    for (const state of this.states) {
      if (state.unavailable !== undefined) {
        reasons.push(`${state.link.name}: ${state.unavailable}`);
        continue;
      }
      try {
        const token = await this.tokenFrom(state, scopes, options);
        if (token) {
          this.selected = state;
          log.debug(`credential: using ${state.link.name}`);
          return token;
        }
        state.unavailable = "returned no token";
      } catch (error) {
        if (!isCredentialUnavailable(error)) {
          log.debug(`credential: ${state.link.name} failed: ${(error as Error).message}`);
          throw error;
        }
        state.unavailable = describeUnavailable(error as Error);
        log.debug(`credential: ${state.link.name} unavailable: ${state.unavailable}`);
      }
      reasons.push(`${state.link.name}: ${state.unavailable}`);
    }
    throw new CredentialChainError(
      `no credential could get a token (tried ${this.states.length === 0 ? "nothing" : this.states.map((s) => s.link.name).join(", ")}). ${reasons.join("; ")}`,
      reasons,
    );
  }

  private tokenFrom(state: LinkState, scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
    state.credential ??= state.link.create();
    return state.credential.getToken(scopes, options);
  }
}

function describeUnavailable(error: Error): string {
  // DefaultAzureCredential's own "ChainedTokenCredential authentication failed." hides why each part failed.
  const inner = (error as Error & { errors?: unknown }).errors;
  if (Array.isArray(inner) && inner.length > 0) {
    return inner.map((part: unknown) => firstLine(part instanceof Error ? part.message : String(part))).join(" / ");
  }
  return firstLine(error.message);
}

function firstLine(text: string): string {
  const line = text.split("\n").find((part) => part.trim() !== "") ?? text;
  return line.length > 300 ? `${line.slice(0, 300)}…` : line.trim();
}
