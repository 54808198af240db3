/**
 * The original design's `GET /vncdispatch/{username}/{remoteip}`, kept for portals written against it: same
 * authentication as the rest of the API, same effect (the user's live desktop or a new one), the original's field
 * names, and never the VNC password (which the original returned).
 */
import type { FastifyInstance } from 'fastify';
import type { SessionService } from '../sessions/session-service.js';
import { changeErrors, USERNAME_PATTERN } from './schemas.js';
import { checkClientIp } from './sessions-routes.js';

export async function legacyRoute(app: FastifyInstance, deps: { sessions: SessionService }): Promise<void> {
  app.get<{ Params: { username: string; remoteip: string } }>('/vncdispatch/:username/:remoteip', {
    config: { role: 'operate' },
    schema: {
      operationId: 'legacyOpenSession',
      summary: "The original dispatcher's route: open or get back a user's desktop (no password in the answer)",
      tags: ['legacy'],
      params: {
        type: 'object',
        required: ['username', 'remoteip'],
        additionalProperties: false,
        properties: {
          username: { type: 'string', pattern: USERNAME_PATTERN },
          remoteip: { type: 'string', maxLength: 45, anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }] },
        },
      },
      response: {
        200: {
          type: 'object',
          required: ['username', 'token', 'blade', 'display', 'vncpid', 'remoteip'],
          properties: {
            username: { type: 'string' },
            token: { type: 'string', description: 'Connection token for /websockify (bound to remoteip).' },
            blade: { type: 'string' },
            display: { type: 'integer' },
            vncpid: { type: 'integer' },
            remoteip: { type: 'string' },
          },
        },
        ...changeErrors,
        422: { $ref: 'Error#' },
        503: { $ref: 'Error#' },
      },
    },
  }, async (request) => {
    const remoteip = checkClientIp(request.params.remoteip, 'params/remoteip')!;
    const g = await deps.sessions.open(request.params.username, remoteip);
    return {
      username: g.session.username,
      token: g.token,
      blade: g.session.blade,
      display: g.session.display,
      vncpid: g.session.pid,
      remoteip,
    };
  });
}
