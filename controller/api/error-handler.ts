/**
 * The one place REST errors become HTTP answers: `{ "error": { "code": "VD_ERR_...", "message": "..." } }`.
 * VncDispatchErrors keep their code and status; fastify's own errors (validation, body limits, bad JSON) get stable
 * VD_ERR_ codes; anything else is a 500 with a generic message (details only in the log).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES, VncDispatchError } from '../errors.js';
import type { Logger } from '../log.js';

type Code = keyof typeof ERROR_CODES;

export function errorBody(code: string, message: string): { error: { code: string; message: string } } {
  return { error: { code, message } };
}

/** Maps fastify's own error codes to ours. */
const FASTIFY_CODES: Record<string, Code> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'VD_ERR_PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'VD_ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'VD_ERR_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'VD_ERR_BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'VD_ERR_BAD_REQUEST',
};

/** Converts any error to [status, code, message] for the client. */
export function toHttpError(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof VncDispatchError) return { status: err.status, code: err.code, message: err.message };
  const fe = err as Partial<FastifyError> & { validation?: unknown[]; validationContext?: string };
  if (fe.validation) {
    // fastify names the field: "body/username must match pattern ..."
    return { status: 400, code: 'VD_ERR_BAD_REQUEST', message: `invalid request: ${fe.message}` };
  }
  const mapped = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return { status: ERROR_CODES[mapped][0], code: mapped, message: fe.message ?? ERROR_CODES[mapped][1] };
  if (fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (err instanceof SyntaxError && fe.statusCode === 400)) {
    return { status: 400, code: 'VD_ERR_BAD_REQUEST', message: 'the body is not valid JSON' };
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, code: 'VD_ERR_BAD_REQUEST', message: fe.message ?? 'bad request' };
  }
  return { status: 500, code: 'VD_ERR_INTERNAL', message: ERROR_CODES.VD_ERR_INTERNAL[1] };
}

/** fastify setErrorHandler for the REST API. */
export function apiErrorHandler(log: Logger) {
  return (err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const e = toHttpError(err);
    if (e.status >= 500) log.error({ err, reqId: request.id, code: e.code }, 'request failed');
    else log.info({ reqId: request.id, code: e.code, status: e.status, message: e.message }, 'request refused');
    return reply.code(e.status).type('application/json; charset=utf-8').send(errorBody(e.code, e.message));
  };
}
