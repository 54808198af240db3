import { createHash, randomBytes } from 'node:crypto';

/** Random bytes per token and reconnect key: 256 bits, far beyond guessing even at millions of tries per second. */
export const SECRET_BYTES = 32;

/** base64url of 32 bytes: exactly 43 characters of [A-Za-z0-9_-], no padding. */
const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/** A fresh connection token (or any bearer secret): 256 bits from the OS CSPRNG, base64url. */
export function newSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

/** A fresh connection token. Only its hashSecret() is ever stored. */
export const newToken = newSecret;

/** A fresh viewer reconnect key (session-lifetime secret); same format and strength as a token. */
export const newReconnectKey = newSecret;

/**
 * True if `value` has the exact shape newSecret() produces. Anything else is refused before any store lookup, so
 * junk (oversized strings, other alphabets) never reaches the database.
 */
export function isWellFormedSecret(value: unknown): value is string {
  return typeof value === 'string' && SECRET_PATTERN.test(value);
}

/**
 * SHA-256 hex of a secret: what the store keeps and looks up. Looking up by a hash of a 256-bit secret means the
 * lookup timing reveals nothing useful about the secret, and a copy of the database yields no usable token.
 */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}
