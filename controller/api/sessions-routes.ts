/** /api/v1/sessions: open (or get back) a user's desktop, list, show and end sessions. */
import { isIP } from 'node:net';
import { prefersRespondAsync } from './prefer.js';
import type { FastifyInstance } from 'fastify';
import { BadRequestError } from '../errors.js';
import type { SessionConnectionStats } from '../proxy/index.js';
import type { SessionService } from '../sessions/session-service.js';
import { changeErrors, commonErrors, SESSION_ID_PATTERN, USERNAME_PATTERN } from './schemas.js';
import { grantView, sessionView } from './session-view.js';

export interface SessionsRouteDeps {
  sessions: SessionService;
  publicUrl: () => string;
  /** Open viewer connections per session (the proxy). */
  connections: () => Map<string, SessionConnectionStats>;
}

interface ListQuery {
  state: 'live' | 'ended' | 'all';
  blade?: string;
  user?: string;
  limit: number;
  offset: number;
}

interface CreateBody {
  username: string;
  clientIp?: string;
  geometry?: string;
}

/** The agent's bounds for a desktop size (its --geometry and StartSession check the same). */
export const GEOMETRY_BOUNDS = { minW: 320, minH: 200, maxW: 8192, maxH: 8192 } as const;

/** Checks WIDTHxHEIGHT against GEOMETRY_BOUNDS, so a bad size is a 400 here rather than a refusal from a blade. */
export function checkGeometry(geometry: string | undefined, field: string): string | undefined {
  if (geometry === undefined) return undefined;
  const m = /^(\d{3,4})x(\d{3,4})$/.exec(geometry);
  const b = GEOMETRY_BOUNDS;
  if (!m || Number(m[1]) < b.minW || Number(m[1]) > b.maxW || Number(m[2]) < b.minH || Number(m[2]) > b.maxH) {
    throw new BadRequestError(`${field} must be WIDTHxHEIGHT between ${b.minW}x${b.minH} and ${b.maxW}x${b.maxH}`);
  }
  return geometry;
}

/** Checks an IP string strictly (JSON-schema formats alone would let through zone ids and odd forms). */
export function checkClientIp(ip: string | undefined, field: string): string | null {
  if (ip === undefined) return null;
  if (!isIP(ip) || ip.includes('%')) throw new BadRequestError(`${field} must be an IPv4 or IPv6 address`);
  return ip;
}

const idParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: SESSION_ID_PATTERN } },
} as const;

export async function sessionsRoutes(app: FastifyInstance, deps: SessionsRouteDeps): Promise<void> {
  app.post<{ Body: CreateBody }>('/api/v1/sessions', {
    config: { role: 'operate' },
    schema: {
      operationId: 'openSession',
      summary: 'Open a desktop for a user, or get back the live one with a fresh token',
      tags: ['sessions'],
      headers: {
        type: 'object',
        properties: {
          prefer: {
            type: 'string',
            description: 'RFC 7240. `respond-async`: answer 202 as soon as the session is reserved, with its token, ' +
              'while the desktop starts; the viewer loads meanwhile and its connection is held until the desktop ' +
              'runs. A start that then fails ends the session (GET shows `start-failed`; the viewer says so).',
          },
        },
      },
      body: {
        type: 'object',
        required: ['username'],
        additionalProperties: false,
        properties: {
          username: { type: 'string', pattern: USERNAME_PATTERN, description: 'Unix login name on the blades.' },
          clientIp: {
            type: 'string',
            maxLength: 45,
            anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }],
            description: "The browser's IP address; when given, the connection token works only from it.",
          },
          geometry: {
            type: 'string',
            pattern: '^[0-9]{3,4}x[0-9]{3,4}$',
            description: 'Initial desktop size, WIDTHxHEIGHT between 320x200 and 8192x8192 (default: the agent\'s ' +
              '--geometry). Only a new desktop takes it; the viewer then fits the desktop to its window.',
          },
        },
      },
      response: {
        200: { description: 'The user already had a live session: it, with a fresh token.', $ref: 'SessionGrant#' },
        201: { description: 'A new session.', $ref: 'SessionGrant#' },
        202: { description: 'With `Prefer: respond-async`: a session whose desktop is still starting, with its token.',
          $ref: 'SessionGrant#' },
        ...changeErrors,
        409: { $ref: 'Error#' },
        413: { $ref: 'Error#' },
        415: { $ref: 'Error#' },
        422: { $ref: 'Error#' },
        503: { $ref: 'Error#' },
      },
    },
  }, async (request, reply) => {
    const clientIp = checkClientIp(request.body.clientIp, 'body/clientIp');
    const geometry = checkGeometry(request.body.geometry, 'body/geometry');
    const respondAsync = prefersRespondAsync(request.headers.prefer);
    const grant = await deps.sessions.open(request.body.username, clientIp, geometry === undefined ? {} : { geometry },
      !respondAsync);
    if (respondAsync) reply.header('Preference-Applied', 'respond-async');
    const code = grant.session.state === 'starting' ? 202 : grant.created ? 201 : 200;
    return reply.code(code).send(grantView(grant, deps.publicUrl()));
  });

  app.get<{ Querystring: ListQuery }>('/api/v1/sessions', {
    config: { role: 'read' },
    schema: {
      operationId: 'listSessions',
      summary: 'List sessions, newest first',
      tags: ['sessions'],
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          state: { type: 'string', enum: ['live', 'ended', 'all'], default: 'live' },
          blade: { type: 'string', maxLength: 63 },
          user: { type: 'string', pattern: USERNAME_PATTERN },
          limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
          offset: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 0, description: 'Skip this many (paging).' },
        },
      },
      response: {
        200: {
          type: 'object',
          required: ['sessions', 'nextOffset'],
          properties: {
            sessions: { type: 'array', items: { $ref: 'Session#' } },
            nextOffset: { type: ['integer', 'null'], description: 'The offset of the next page; null on the last.' },
          },
        },
        ...commonErrors,
      },
    },
  }, async (request) => {
    const { state, blade, user, limit, offset } = request.query;
    const live = state === 'all' ? undefined : state === 'live';
    // One more than asked says whether there is a next page without a second count query.
    const list = await deps.sessions.list({ ...(live !== undefined && { live }), ...(blade && { blade }),
      ...(user && { username: user }), limit: limit + 1, offset });
    const stats = deps.connections();
    return {
      sessions: list.slice(0, limit).map((s) => sessionView(s, stats.get(s.id))),
      nextOffset: list.length > limit ? offset + limit : null,
    };
  });

  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id', {
    config: { role: 'read' },
    schema: {
      operationId: 'getSession',
      summary: 'Show a session',
      tags: ['sessions'],
      params: idParams,
      response: { 200: { $ref: 'Session#' }, ...commonErrors, 404: { $ref: 'Error#' } },
    },
  }, async (request) => {
    const s = await deps.sessions.get(request.params.id);
    return sessionView(s, deps.connections().get(s.id));
  });

  app.delete<{ Params: { id: string } }>('/api/v1/sessions/:id', {
    config: { role: 'operate' },
    schema: {
      operationId: 'endSession',
      summary: 'End a session: stop the desktop, revoke its tokens, close its connections',
      tags: ['sessions'],
      params: idParams,
      response: { 200: { $ref: 'Session#' }, ...changeErrors, 404: { $ref: 'Error#' } },
    },
  }, async (request) => sessionView(await deps.sessions.end(request.params.id, 'deleted')));
}
