/**
 * The one place an error becomes an answer, for every edge: the REST API and the web pages (one fastify error handler
 * and not-found handler, registered at the root so every scope inherits them), and, written straight onto the socket
 * by `refuseRaw()`, refused WebSocket upgrades and requests Node's HTTP parser refuses (fastify's clientErrorHandler).
 * The body is always `{ "error": { "code": "VD_ERR_...", "message": "..." } }`.
 *
 * VncDispatchErrors keep their code, status and message; fastify's own errors (validation, body limits, bad JSON,
 * wrong content type) become the matching VncDispatchError; anything else is a 500 with a generic message and the
 * details only in the log.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import {
  BadRequestError,
  HeadersTooLargeError,
  RequestTimeoutError,
  InternalError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
  VncDispatchError,
} from './errors.js';
import type { Logger } from './log.js';

export interface ErrorBody {
  error: { code: string; message: string };
}

/** fastify's own error codes that have a class of ours. */
const FASTIFY_ERRORS: Readonly<Record<string, new (message?: string, options?: ErrorOptions) => VncDispatchError>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: PayloadTooLargeError,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: UnsupportedMediaTypeError,
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: BadRequestError,
  FST_ERR_CTP_EMPTY_JSON_BODY: BadRequestError,
  FST_ERR_CTP_INVALID_JSON_BODY: BadRequestError,
};

/** fastify's 4xx without a code of their own (plugins, the HTTP parser), by status. */
const BY_STATUS: Readonly<Record<number, new (message?: string, options?: ErrorOptions) => VncDispatchError>> = {
  404: NotFoundError,
  405: MethodNotAllowedError,
  413: PayloadTooLargeError,
  415: UnsupportedMediaTypeError,
};

/** Any thrown value as the VncDispatchError a client is told about. */
export function toDispatchError(err: unknown): VncDispatchError {
  if (err instanceof VncDispatchError) return err;
  const fe = (typeof err === 'object' && err !== null ? err : {}) as Partial<FastifyError> & { validation?: unknown };
  // fastify's parse and validation messages name the field and the rule, never the submitted value.
  if (fe.validation) return new BadRequestError(`invalid request: ${String(fe.message)}`, { cause: err });
  const known = typeof fe.code === 'string' && Object.hasOwn(FASTIFY_ERRORS, fe.code) ? FASTIFY_ERRORS[fe.code] : undefined;
  if (known) return new known(typeof fe.message === 'string' ? fe.message : undefined, { cause: err });
  if (err instanceof SyntaxError && fe.statusCode === 400) return new BadRequestError('the body is not valid JSON', { cause: err });
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const cls = (Object.hasOwn(BY_STATUS, fe.statusCode) ? BY_STATUS[fe.statusCode] : undefined) ?? BadRequestError;
    return new cls(typeof fe.message === 'string' ? fe.message : undefined, { cause: err });
  }
  return new InternalError(undefined, { cause: err });
}

export function errorBody(err: VncDispatchError): ErrorBody {
  return { error: { code: err.code, message: err.message } };
}

/** Logs one line for a refused or failed request: info for the caller's mistakes, error (with the cause) for ours. */
export function logRefusal(log: Logger, err: VncDispatchError, context: Record<string, unknown>, what = 'request refused'): void {
  if (err.statusCode >= 500) log.error({ ...context, err: err.cause ?? err, code: err.code }, `${what}: ${err.message}`);
  else log.info({ ...context, code: err.code, status: err.statusCode, message: err.message }, what);
}

/** fastify setErrorHandler, for the whole app (REST and web pages alike). */
export function errorHandler(log: Logger) {
  return (err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const e = toDispatchError(err);
    logRefusal(log, e, { reqId: request.id, url: request.routeOptions.url ?? request.url.split('?')[0]!.slice(0, 200) });
    if (e.retryAfterSeconds !== undefined) void reply.header('retry-after', String(e.retryAfterSeconds));
    return reply.code(e.statusCode).type('application/json; charset=utf-8').send(errorBody(e));
  };
}

/** fastify setNotFoundHandler: unknown routes get the same body as every other error. */
export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const e = new NotFoundError(`no route ${request.method} ${request.url.split('?')[0]!.slice(0, 200)}`);
  return reply.code(e.statusCode).type('application/json; charset=utf-8').send(errorBody(e));
}

export interface RawExtras {
  /** Seconds, for 429 (a 503's own retryAfterSeconds is sent without it). */
  retryAfter?: number | undefined;
  /** Further response headers (fixed names and values chosen by the controller, never from the request). */
  headers?: Record<string, string>;
}

/** Writes an error answer onto a raw socket (no fastify reply exists) and closes it once flushed, or at once if gone. */
export function refuseRaw(socket: Duplex, err: VncDispatchError, extras: RawExtras = {}): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(errorBody(err));
  const head = [
    `HTTP/1.1 ${err.statusCode} ${STATUS_CODES[err.statusCode] ?? 'Error'}`,
    'Connection: close',
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
  ];
  const retryAfter = extras.retryAfter ?? err.retryAfterSeconds;
  if (retryAfter !== undefined) head.push(`Retry-After: ${retryAfter}`);
  for (const [name, value] of Object.entries(extras.headers ?? {})) head.push(`${name}: ${value}`);
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy());
}

/** Node's HTTP parser's refusals (malformed request line or headers, headers too large, too slow) as our errors. */
export function clientErrorHandler(log: Logger) {
  return (err: Error & { code?: string }, socket: Socket): void => {
    // A reset connection has nobody left to answer.
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const e = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? new RequestTimeoutError(undefined, { cause: err })
      : err.code === 'HPE_HEADER_OVERFLOW' ? new HeadersTooLargeError(undefined, { cause: err })
        : new BadRequestError('The request is not valid HTTP.', { cause: err });
    logRefusal(log, e, { clientIp: socket.remoteAddress, parserError: err.code });
    refuseRaw(socket, e);
  };
}

/** http.Server 'connect': the controller is no forward proxy. Without a listener Node drops the socket unanswered. */
export function connectRefusal(log: Logger) {
  return (req: { socket: Socket }, socket: Duplex): void => {
    socket.on('error', () => {});
    const e = new MethodNotAllowedError('CONNECT is not supported.');
    logRefusal(log, e, { clientIp: req.socket.remoteAddress });
    refuseRaw(socket, e);
  };
}
