/**
 * POST /viewer/reconnect: the viewer page trades its session-lifetime reconnect key for a fresh connection token
 * while the session is live, so a dropped connection (network blip, controller restart, single-use token already
 * spent) resumes without asking the portal again. Each grant has its own key, stored only as a SHA-256 hash (store.addReconnectKey).
 *
 * An unknown key, a key for another session and an ended session all get the same 410 answer, so the endpoint
 * reveals nothing about which keys or sessions exist. Only the holder of the session's own key (from its bound address)
 * learns that its desktop could not be started (410 VD_ERR_SESSION_START_FAILED), so the page can say so. A key whose grant named a client IP is honoured only from that
 * address (403 VD_ERR_RECONNECT_IP_MISMATCH), and the tokens it buys are bound to it, exactly like the grant's own.
 */
import type { FastifyInstance } from 'fastify';
import { FixedWindowLimiter } from '../../shared/fixed-window.js';
import { SESSION_ID_PATTERN } from '../../shared/names.js';
import type { Logger } from '../log.js';
import { BadRequestError, RateLimitedError, ReconnectIpMismatchError, SessionEndedError, SessionStartFailedError } from '../errors.js';
import type { Store } from '../store/store.js';
import { normalizeIp } from '../tokens/client-ip.js';
import { hashSecret, isWellFormedSecret } from '../tokens/secrets.js';

/** What this route needs from the TokenService (controller/tokens). */
export interface ReconnectTokenIssuer {
  issue(sessionId: string, clientIp: string | null): Promise<{ token: string; expiresAt: Date }>;
}

export interface ReconnectOptions {
  /** Reconnect requests allowed per client IP per minute. */
  perIpPerMinute: number;
}

const DEFAULTS: ReconnectOptions = {
  perIpPerMinute: 30,
};

/** The error body (controller/error-reply.ts), inline: the web scope has no access to the API's shared schemas. */
const ERROR_REPLY = {
  type: 'object',
  required: ['error'],
  properties: {
    error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } },
  },
} as const;

interface ReconnectBody {
  session: string;
  key: string;
}


/**
 * Checks the body by hand rather than with a route schema: fastify's default Ajv silently drops unknown properties
 * and coerces types, and this endpoint should refuse anything but exactly `{ session, key }`.
 */
function parseBody(body: unknown): ReconnectBody {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequestError('The body must be a JSON object { "session", "key" }.');
  }
  const extra = Object.keys(body).filter((k) => k !== 'session' && k !== 'key');
  if (extra.length > 0) throw new BadRequestError('The body may contain only "session" and "key".');
  const { session, key } = body as Record<string, unknown>;
  // Session ids are the shared UUID pattern and keys exactly what newReconnectKey() makes (base64url of 32 bytes),
  // so nothing odd reaches the store or the logs.
  if (typeof session !== 'string' || !SESSION_ID_PATTERN.test(session)) throw new BadRequestError('"session" must be a session id.');
  if (!isWellFormedSecret(key)) throw new BadRequestError('"key" must be a reconnect key.');
  return { session, key };
}

/** Adds POST /viewer/reconnect to `app` (an encapsulated scope of registerWeb). */
export function registerReconnect(
  app: FastifyInstance,
  deps: { store: Store; tokens: ReconnectTokenIssuer; log: Logger },
  options: Partial<ReconnectOptions> = {},
): void {
  const opts = { ...DEFAULTS, ...options };
  const limiter = new FixedWindowLimiter({ limit: opts.perIpPerMinute, windowMs: 60_000 });
  const log = deps.log;

  app.post(
    '/viewer/reconnect',
    {
      bodyLimit: 1024,
      // Documented for OpenAPI only: parseBody() checks the body exactly, without Ajv's coercion or stripping.
      schema: {
        operationId: 'viewerReconnect',
        summary: "Trade the viewer's reconnect key for a fresh connection token while the session is live",
        description: 'Called by the viewer page (no API key: the reconnect key is the credential). Rate-limited per '
          + 'client IP. An unknown key, a key for another session and an ended session all answer 410 '
          + 'VD_ERR_SESSION_ENDED; the session\'s own key answers 410 VD_ERR_SESSION_START_FAILED once its desktop could '
          + 'not be started. A key whose '
          + 'grant named a clientIp answers 403 VD_ERR_RECONNECT_IP_MISMATCH from any other address.',
        tags: ['viewer'],
        security: [],
        body: {
          type: 'object',
          required: ['session', 'key'],
          additionalProperties: false,
          properties: {
            session: { type: 'string', description: 'The session id from the viewer URL.' },
            key: { type: 'string', description: 'The reconnect key from the viewer URL.' },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['token', 'expiresAt', 'websocketPath'],
            properties: {
              token: { type: 'string' },
              expiresAt: { type: 'string', format: 'date-time' },
              websocketPath: { type: 'string' },
            },
          },
          400: ERROR_REPLY,
          403: ERROR_REPLY,
          410: ERROR_REPLY,
          413: ERROR_REPLY,
          415: ERROR_REPLY,
          429: ERROR_REPLY,
        },
      },
      validatorCompiler: () => () => true,
      // Counted before the body is read, so malformed requests count too.
      onRequest: async (request, reply) => {
        reply.header('cache-control', 'no-store');
        const decision = limiter.hit(request.ip);
        if (decision.allowed) return;
        log.warn({ clientIp: request.ip }, 'viewer reconnect rate limit hit');
        reply.header('retry-after', String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))));
        throw new RateLimitedError();
      },
    },
    async (request, reply) => {
      const { session: sessionId, key } = parseBody(request.body);
      const found = await deps.store.getReconnectKey(hashSecret(key));
      const session = found?.session;
      const bound = found?.key.clientIp ?? null;
      const fromBoundIp = bound === null || normalizeIp(request.ip) === normalizeIp(bound);
      if (found && session?.id === sessionId && session.state === 'ended' && session.endReason === 'start-failed' && fromBoundIp) {
        log.info({ sessionId, clientIp: request.ip }, 'viewer reconnect refused: the desktop could not be started');
        throw new SessionStartFailedError('This desktop could not be started.');
      }
      if (!found || !session || session.id !== sessionId || session.state === 'ended') {
        log.info({ sessionId, clientIp: request.ip, found: found !== null }, 'viewer reconnect refused: session ended or key unknown');
        throw new SessionEndedError('This desktop session has ended.');
      }
      // The grant bound its key to an address: another address gets nothing, not even a token it could not use.
      if (!fromBoundIp) {
        log.warn({ sessionId, username: session.username, clientIp: request.ip, boundIp: bound },
          'viewer reconnect refused: the key is bound to another client IP');
        throw new ReconnectIpMismatchError();
      }

      // Bind the new token as the grant bound its own.
      const { token, expiresAt } = await deps.tokens.issue(session.id, bound);
      log.info({ sessionId: session.id, username: session.username, clientIp: request.ip }, 'viewer reconnect token issued');
      return reply.send({
        token,
        expiresAt: expiresAt.toISOString(),
        websocketPath: `/websockify?token=${encodeURIComponent(token)}`,
      });
    },
  );
}
