/**
 * Checks on StartSession input that need no system lookup. They run first, so that nothing reaches the passwd
 * database, the filesystem or a process with a name like `a;id` or `-c`.
 */
import { DEPTHS, validGeometry } from '../config.js';
import { AgentError } from '../errors.js';
import { SESSION_ID_PATTERN, USERNAME_PATTERN } from '../../shared/names.js';

/** VNC authentication uses at most 8 bytes; printable ASCII keeps the bytes unambiguous. */
const PASSWORD_PATTERN = /^[\x21-\x7e]{1,8}$/;

export function checkUsername(username: string): void {
  if (!USERNAME_PATTERN.test(username)) {
    // Echo only a short, escaped prefix: the name may be 10 kB of garbage.
    const shown = JSON.stringify(username.slice(0, 40)) + (username.length > 40 ? '…' : '');
    throw new AgentError('VD_AGENT_INVALID_USERNAME', `invalid username ${shown}: must match ${USERNAME_PATTERN.source}`);
  }
}

export function checkPassword(password: string): void {
  if (!PASSWORD_PATTERN.test(password)) {
    throw new AgentError('VD_AGENT_INVALID_PASSWORD');
  }
}

export function checkGeometry(geometry: string): void {
  if (!validGeometry(geometry)) {
    throw new AgentError('VD_AGENT_INVALID_GEOMETRY', `invalid geometry ${JSON.stringify(geometry.slice(0, 20))}: ` +
      'must be WIDTHxHEIGHT between 320x200 and 8192x8192');
  }
}

export function checkDepth(depth: number): void {
  if (!(DEPTHS as readonly number[]).includes(depth)) {
    throw new AgentError('VD_AGENT_INVALID_DEPTH', `invalid depth ${depth}: must be 16, 24 or 32`);
  }
}

/** Returns `id` if it is a session id, else throws VD_AGENT_INVALID_ID. */
export function checkSessionId(id: string): string {
  if (!SESSION_ID_PATTERN.test(id)) {
    throw new AgentError('VD_AGENT_INVALID_ID', `invalid session id ${JSON.stringify(id.slice(0, 40))}: must be a ` +
      'lower-case UUID');
  }
  return id;
}
