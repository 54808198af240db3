import {
  BadRequestError,
  TokenExpiredError,
  TokenIpMismatchError,
  TokenMalformedError,
  TokenRevokedError,
  TokenSessionEndedError,
  TokenUnknownError,
  TokenUsedError,
  type VncDispatchError,
} from '../errors.js';
import type { SessionRecord, Store, TokenRecord, TokenRejection } from '../store/store.js';
import { normalizeIp } from './client-ip.js';
import { hashSecret, isWellFormedSecret, newToken } from './secrets.js';

export interface TokenServiceOptions {
  /** How long a token may be presented after it is issued. Short: it only has to cover loading the viewer. */
  ttlMs: number;
  /** When true a token opens one connection; a replay is refused. When false it may be reused until it expires. */
  singleUse: boolean;
}

/** Injected so tests can move time; defaults to the wall clock. */
export type Clock = () => Date;

export interface IssuedToken {
  /** The bearer token: hand it to the client, never log or store it. */
  token: string;
  expiresAt: Date;
}

export interface ConsumedToken {
  session: SessionRecord;
  token: TokenRecord;
}

const REJECTIONS: Record<TokenRejection, new () => VncDispatchError> = {
  unknown: TokenUnknownError,
  expired: TokenExpiredError,
  revoked: TokenRevokedError,
  used: TokenUsedError,
  'session-ended': TokenSessionEndedError,
};

/** The controller error for a store rejection reason (stable VD_ERR_TOKEN_* code). */
export function tokenRejectionError(reason: TokenRejection): VncDispatchError {
  return new REJECTIONS[reason]();
}

/**
 * Issues and checks connection tokens: 256-bit random bearer secrets, stored only as SHA-256 hashes, short-lived,
 * bound to one session and optionally to the client IP they were issued for.
 */
export class TokenService {
  private readonly options: TokenServiceOptions;

  constructor(
    private readonly store: Store,
    options: Partial<TokenServiceOptions> = {},
    private readonly clock: Clock = () => new Date(),
  ) {
    this.options = { ttlMs: 60_000, singleUse: true, ...options };
    if (!Number.isSafeInteger(this.options.ttlMs) || this.options.ttlMs <= 0) {
      throw new TypeError('ttlMs must be a positive integer');
    }
    if (typeof this.options.singleUse !== 'boolean') throw new TypeError('singleUse must be a boolean');
  }

  /**
   * Issues a token for a session. With a `clientIp` the token is bound to that address (normalized, so the
   * IPv4-mapped form of the same address also matches); null leaves it unbound.
   */
  async issue(sessionId: string, clientIp: string | null): Promise<IssuedToken> {
    let boundIp: string | null = null;
    if (clientIp !== null) {
      boundIp = normalizeIp(clientIp);
      if (boundIp === null) throw new BadRequestError('clientIp is not a valid IP address.');
    }
    const now = this.clock();
    const token = newToken();
    const expiresAt = new Date(now.getTime() + this.options.ttlMs);
    await this.store.insertToken({
      hash: hashSecret(token),
      sessionId,
      expiresAt,
      clientIp: boundIp,
      createdAt: now,
      usedAt: null,
      revokedAt: null,
    });
    return { token, expiresAt };
  }

  /**
   * Checks a presented token and (in single-use mode) marks it used, atomically in the store. Throws a
   * VncDispatchError with a VD_ERR_TOKEN_* code when refused.
   * `clientIp` is the connecting peer as the caller determined it (after any trusted-proxy handling); null if unknown.
   */
  async consume(token: unknown, clientIp: string | null): Promise<ConsumedToken> {
    if (!isWellFormedSecret(token)) throw new TokenMalformedError();
    const hash = hashSecret(token);
    // The binding check first, so a token presented from the wrong address is not burnt for its rightful holder. The
    // binding is fixed at issue, so checking it before the atomic consume is race-free.
    const record = await this.store.getToken(hash);
    if (!record) throw new TokenUnknownError();
    if (record.clientIp !== null && (clientIp === null || normalizeIp(clientIp) !== normalizeIp(record.clientIp))) {
      throw new TokenIpMismatchError();
    }
    const result = await this.store.consumeToken(hash, this.clock(), { singleUse: this.options.singleUse });
    if (!result.ok) throw tokenRejectionError(result.reason);
    return { session: result.session, token: result.token };
  }

  /** Revokes every outstanding token of a session (endSession already does this). Returns how many. */
  async revokeAll(sessionId: string): Promise<number> {
    return this.store.revokeTokens(sessionId, this.clock());
  }

  /** Deletes tokens that expired more than `graceMs` ago (kept that long so a late client hears "expired"). */
  async prune(graceMs = 3_600_000): Promise<number> {
    return this.store.pruneTokens(new Date(this.clock().getTime() - graceMs));
  }
}
