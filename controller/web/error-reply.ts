/**
 * Error answers of the web routes in the API's shape, `{ "error": { "code", "message" } }`, so the viewer and any
 * client parse one format. Registered on registerWeb's own scope, so it covers fastify's own failures there too
 * (malformed JSON, schema mismatch, oversized body, wrong content type) without touching the API's handler.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../log.js';
import { VncDispatchError } from '../errors.js';

export interface ErrorBody {
  error: { code: string; message: string };
}

export function errorBody(code: string, message: string): ErrorBody {
  return { error: { code, message } };
}

const CODE_BY_STATUS: Readonly<Record<number, string>> = {
  404: 'VD_ERR_NOT_FOUND',
  413: 'VD_ERR_PAYLOAD_TOO_LARGE',
  415: 'VD_ERR_UNSUPPORTED_MEDIA_TYPE',
};

/** A fastify error handler for the web scope. */
export function webErrorHandler(log: Logger) {
  return (error: FastifyError | VncDispatchError | Error, request: FastifyRequest, reply: FastifyReply) => {
    if (error instanceof VncDispatchError) {
      return reply.code(error.status).send(errorBody(error.code, error.message));
    }
    const status = (error as FastifyError).statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // Fastify's parse and validation messages name the field and the rule, never the submitted value.
      return reply.code(status).send(errorBody(CODE_BY_STATUS[status] ?? 'VD_ERR_BAD_REQUEST', error.message));
    }
    log.error({ err: error, url: request.routeOptions.url }, 'web route failed');
    return reply.code(500).send(errorBody('VD_ERR_INTERNAL', 'Internal error.'));
  };
}
