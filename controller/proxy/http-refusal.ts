/**
 * Refusing a WebSocket upgrade: a plain HTTP response carrying the same error body as every other answer
 * (controller/error-reply.ts), then the socket is closed. No WebSocket is created and no connection to any desktop
 * is opened.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody } from '../error-reply.js';
import type { VncDispatchError } from '../errors.js';

export interface RefusalExtras {
  /** Seconds, for 429. */
  retryAfter?: number | undefined;
  /** Further response headers (fixed names and values chosen by the proxy, never from the request). */
  headers?: Record<string, string>;
}

/** Writes the refusal and closes the socket once it is flushed (or at once if it is already gone). */
export function refuseUpgrade(socket: Duplex, err: VncDispatchError, extras: RefusalExtras = {}): void {
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
  if (extras.retryAfter !== undefined) head.push(`Retry-After: ${extras.retryAfter}`);
  for (const [name, value] of Object.entries(extras.headers ?? {})) head.push(`${name}: ${value}`);
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy());
}
