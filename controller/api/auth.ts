/**
 * API-key authentication and roles. A request carries `Authorization: Bearer <key>`; each configured key has one role
 * and each route names the least role it needs (route option `config.role`; a route that names none needs `admin`,
 * so a forgotten declaration fails closed).
 *
 * Roles are ordered, each including the ones before it:
 *   read     see blades, sessions, the event stream and the OpenAPI document (monitoring, read-only dashboards)
 *   operate  also open and end sessions, and cordon, uncordon and drain blades (portal backends, on-call operators)
 *   admin    also register and remove blades
 *
 * Both sides are hashed with SHA-256 before crypto.timingSafeEqual, so the comparison takes the same time whatever
 * the key's length or content, and every configured key is checked (no early exit revealing which one matched).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ForbiddenError, UnauthorizedError } from '../errors.js';

export const ROLES = ['read', 'operate', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface ApiKey {
  key: string;
  role: Role;
}

/** The challenge every 401 of the REST API carries (RFC 9110 §11.6.1, RFC 6750 §3). */
export const WWW_AUTHENTICATE = 'Bearer realm="vncdispatch"';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The least role that may call this route (default admin). */
    role?: Role;
  }
  interface FastifyRequest {
    /** The role of the API key that authenticated this request (set by apiKeyAuth). */
    apiRole?: Role;
  }
}

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

/** True if `have` includes the rights of `need`. */
export function roleAllows(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * Returns an onRequest hook that rejects requests without a valid API key (VD_ERR_UNAUTHORIZED, 401, with
 * WWW-Authenticate) and requests whose key's role is below the route's (VD_ERR_FORBIDDEN, 403).
 */
export function apiKeyAuth(keys: readonly ApiKey[]): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  if (keys.length === 0) throw new TypeError('at least one API key is required');
  const digests = keys.map((k) => ({ digest: digest(k.key), role: k.role }));
  return async (request, reply) => {
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) {
      reply.header('www-authenticate', WWW_AUTHENTICATE);
      throw new UnauthorizedError();
    }
    const presented = digest(m[1]!);
    let role: Role | null = null;
    for (const d of digests) {
      if (timingSafeEqual(d.digest, presented) && (role === null || roleAllows(d.role, role))) role = d.role;
    }
    if (role === null) {
      reply.header('www-authenticate', `${WWW_AUTHENTICATE}, error="invalid_token"`);
      throw new UnauthorizedError('The API key is not valid.');
    }
    const need = request.routeOptions.config.role ?? 'admin';
    if (!roleAllows(role, need)) {
      throw new ForbiddenError(`This API key has the role "${role}"; ${request.method} ${request.routeOptions.url} needs "${need}".`);
    }
    request.apiRole = role;
  };
}
