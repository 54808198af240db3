/**
 * API-key authentication: `Authorization: Bearer <key>`. Both sides are hashed with SHA-256 before
 * crypto.timingSafeEqual, so the comparison takes the same time whatever the key's length or content, and every
 * configured key is checked (no early exit revealing which one matched).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { UnauthorizedError } from '../errors.js';

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Returns an onRequest hook that rejects requests without a valid API key (VD_ERR_UNAUTHORIZED, 401). */
export function apiKeyAuth(keys: readonly string[]): (request: FastifyRequest) => Promise<void> {
  if (keys.length === 0) throw new TypeError('at least one API key is required');
  const digests = keys.map(digest);
  return async (request) => {
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) throw new UnauthorizedError();
    const presented = digest(m[1]!);
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, presented) || ok;
    if (!ok) throw new UnauthorizedError('The API key is not valid.');
  };
}
