/**
 * JSON schemas of the REST API: fastify validates requests and serializes responses with them, and @fastify/swagger
 * builds the OpenAPI document from the same objects, so the document cannot drift from what the server does.
 */
import { SESSION_ID_PATTERN as SESSION_ID_REGEXP, USERNAME_PATTERN as USERNAME_REGEXP } from '../../shared/names.js';

/** A Unix login name the agent may accept (the agent checks again, against passwd). */
export const USERNAME_PATTERN = USERNAME_REGEXP.source;
export const BLADE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';
export const SESSION_ID_PATTERN = SESSION_ID_REGEXP.source;

export const errorSchema = {
  $id: 'Error',
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', description: 'Stable error code, VD_ERR_*.' },
        message: { type: 'string' },
      },
    },
  },
} as const;

const nullableInt = { type: ['integer', 'null'] } as const;
const nullableString = { type: ['string', 'null'] } as const;

/** A session as GET returns it: never the password, never a token. */
export const sessionSchema = {
  $id: 'Session',
  type: 'object',
  required: ['id', 'username', 'blade', 'display', 'state', 'createdAt'],
  properties: {
    id: { type: 'string', format: 'uuid' },
    username: { type: 'string' },
    blade: nullableString,
    display: nullableInt,
    state: { type: 'string', enum: ['starting', 'running', 'ended'] },
    clientIp: nullableString,
    createdAt: { type: 'string', format: 'date-time' },
    endedAt: { type: ['string', 'null'], format: 'date-time' },
    endReason: nullableString,
    viewers: { type: 'integer', description: 'Viewer connections open through this controller now.' },
    bytesDown: { type: 'integer', description: 'Bytes desktop → browser over those connections.' },
    bytesUp: { type: 'integer', description: 'Bytes browser → desktop over those connections.' },
    viewerIps: { type: 'array', items: { type: 'string' }, description: "Those viewers' client addresses." },
  },
} as const;

/** POST /api/v1/sessions: the session plus what the browser needs to connect. */
export const sessionGrantSchema = {
  $id: 'SessionGrant',
  type: 'object',
  required: [...sessionSchema.required, 'token', 'tokenExpiresAt', 'websocketPath', 'viewerUrl'],
  properties: {
    ...sessionSchema.properties,
    token: { type: 'string', description: 'Connection token for the WebSocket proxy: short-lived, single-use by default.' },
    tokenExpiresAt: { type: 'string', format: 'date-time' },
    websocketPath: { type: 'string', description: 'Path (with token) of the WebSocket to the desktop.' },
    viewerUrl: {
      type: 'string',
      description: 'The viewer page; secrets are in the #fragment, so they stay out of server logs and Referer.',
    },
  },
} as const;

export const bladeSchema = {
  $id: 'Blade',
  type: 'object',
  required: ['name', 'address', 'state', 'sessions', 'capacity'],
  properties: {
    name: { type: 'string' },
    address: { type: 'string' },
    state: { type: 'string', enum: ['UP', 'DOWN', 'CORDONED', 'DRAINING', 'UNKNOWN'] },
    liveness: { type: 'string', enum: ['UNKNOWN', 'UP', 'DOWN'] },
    adminState: { type: 'string', enum: ['ACTIVE', 'CORDONED', 'DRAINING'] },
    sessions: { type: 'integer' },
    capacity: { type: 'integer', description: '0 until the blade has answered.' },
    load: {
      type: ['object', 'null'],
      properties: { load1: { type: 'number' }, load5: { type: 'number' }, load15: { type: 'number' } },
    },
    memory: {
      type: ['object', 'null'],
      properties: { totalBytes: { type: 'integer' }, availableBytes: { type: 'integer' } },
    },
    cpus: { type: ['integer', 'null'] },
    hostname: nullableString,
    version: nullableString,
    lastSeen: { type: ['string', 'null'], format: 'date-time' },
    lastError: nullableString,
    unknownSessions: {
      type: 'array',
      description: 'Sessions the blade runs that the store does not know (found by reconciliation).',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          username: { type: 'string' },
          display: { type: 'integer' },
          pid: { type: 'integer' },
          startedAt: nullableString,
        },
      },
    },
  },
} as const;

/** The response every authenticated route may give. */
export const authErrors = { 401: { $ref: 'Error#' } } as const;

/** ... and those of routes that validate parameters, a query or a body. */
export const commonErrors = { ...authErrors, 400: { $ref: 'Error#' } } as const;

/** ... and those of routes that need more than the `read` role (403 VD_ERR_FORBIDDEN for a weaker key). */
export const changeErrors = { ...commonErrors, 403: { $ref: 'Error#' } } as const;

export const sharedSchemas = [errorSchema, sessionSchema, sessionGrantSchema, bladeSchema];
