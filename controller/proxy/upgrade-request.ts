/**
 * The checks a WebSocket upgrade request must pass before anything costs the caller or the controller: the target
 * parsed without throwing, then the same checks `ws` runs in WebSocketServer.handleUpgrade, in its order (method,
 * Upgrade header, Sec-WebSocket-Key, Sec-WebSocket-Version, Sec-WebSocket-Protocol). Running them here, before the
 * token is looked at, means a request `ws` would refuse is refused before a single-use token is consumed or a per-IP
 * slot is taken. Each check is at least as strict as `ws`'s, so nothing that passes here is refused by `ws` later.
 */
import type { IncomingMessage } from 'node:http';
import { BadRequestError, MethodNotAllowedError, NotFoundError, type VncDispatchError } from '../errors.js';

/** What an upgrade request that passed every cheap check asks for. */
export interface UpgradeRequest {
  /** `?token=`, or null when absent or empty. */
  token: string | null;
}

/** ws 8's Sec-WebSocket-Key pattern: 16 random bytes, base64. */
const KEY = /^[+/0-9A-Za-z]{22}==$/;
/** RFC 7230 token characters: what ws accepts in a subprotocol name. */
const PROTOCOL = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
/** A comma-separated protocol list as ws's subprotocol.parse() accepts it (no leading blank, no empty element). */
const PROTOCOL_LIST = new RegExp(`^${PROTOCOL}(?:[ \\t]*,[ \\t]*${PROTOCOL})*[ \\t]*$`);

/** Fixed base for relative request targets; only the path and query are read. */
const BASE = 'http://upgrade.invalid';

/** Parses a request target without throwing; null for one the URL parser refuses. */
export function parseTarget(target: string | undefined): URL | null {
  try {
    return new URL(target ?? '/', BASE);
  } catch {
    return null;
  }
}

/** Checks an upgrade request for `path`; returns what it asks for, or the error to refuse it with. */
export function checkUpgradeRequest(req: IncomingMessage, path: string): UpgradeRequest | VncDispatchError {
  const url = parseTarget(req.url);
  if (url === null) return new BadRequestError('The request target is not a valid URL.');
  if (url.pathname !== path) return new NotFoundError();
  if (req.method !== 'GET') return new MethodNotAllowedError('WebSocket upgrades must use GET.');
  const upgrade = req.headers.upgrade;
  if (typeof upgrade !== 'string' || upgrade.toLowerCase() !== 'websocket') {
    return new BadRequestError('Invalid Upgrade header: expected "websocket".');
  }
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !KEY.test(key)) return new BadRequestError('Missing or invalid Sec-WebSocket-Key header.');
  const version = Number(req.headers['sec-websocket-version']);
  if (version !== 13 && version !== 8) {
    return new BadRequestError('Missing or invalid Sec-WebSocket-Version header (13 or 8).');
  }
  const protocols = req.headers['sec-websocket-protocol'];
  if (protocols !== undefined && !validProtocolList(protocols)) {
    return new BadRequestError('Invalid Sec-WebSocket-Protocol header.');
  }
  return { token: url.searchParams.get('token') || null };
}

function validProtocolList(value: string): boolean {
  if (!PROTOCOL_LIST.test(value)) return false;
  const names = value.split(',').map((p) => p.trim());
  return new Set(names).size === names.length;
}
