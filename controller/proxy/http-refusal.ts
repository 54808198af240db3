/**
 * Refusing a WebSocket upgrade: a plain HTTP response with the project's JSON error body, then the socket is closed.
 * No WebSocket is created and no connection to any desktop is opened.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

export interface Refusal {
  status: number;
  code: string;
  message: string;
  /** Seconds, for 429. */
  retryAfter?: number;
}

/** Writes the refusal and closes the socket once it is flushed (or at once if it is already gone). */
export function refuseUpgrade(socket: Duplex, refusal: Refusal): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code: refusal.code, message: refusal.message } });
  const head = [
    `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? 'Error'}`,
    'Connection: close',
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
  ];
  if (refusal.retryAfter !== undefined) head.push(`Retry-After: ${refusal.retryAfter}`);
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy());
}
