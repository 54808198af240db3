/**
 * Turns a connection token into the proxy's target: the token is consumed (single use, bound to its client address),
 * and the target comes only from its session record and that session's registered blade, never from the request
 * (README, Security: threat 4). The desktop is reached only through the blade agent's mutual-TLS relay: the proxy
 * opens no connection of its own.
 */
import type { BladeRegistry } from '../blades/registry.js';
import { SessionStartingError, TokenSessionEndedError } from '../errors.js';
import type { ProxyTarget } from '../proxy/target.js';
import type { SessionRecord } from '../store/store.js';
import type { TokenService } from '../tokens/index.js';
import type { SessionService } from './session-service.js';

/**
 * The proxy's `authorize` for this controller's tokens and blades. A token of a session whose desktop is still
 * starting (handed out early, with `Prefer: respond-async`) is held until the desktop runs: the browser's connection
 * waits for the desktop rather than failing and retrying. The proxy bounds the whole wait (--handshake-timeout-ms).
 */
export function tokenAuthorizer(tokens: Pick<TokenService, 'consume'>, blades: Pick<BladeRegistry, 'get'>,
  sessions: Pick<SessionService, 'whenRunning'>): (token: string, clientIp: string) => Promise<ProxyTarget> {
  return async (token, clientIp) => {
    const { session: consumed, token: record } = await tokens.consume(token, clientIp);
    const session = consumed.state === 'starting' ? await running(sessions, consumed) : consumed;
    const blade = session.blade ? blades.get(session.blade) : undefined;
    const agentSessionId = session.agentSessionId;
    if (session.state !== 'running' || !blade || !agentSessionId || !session.password) {
      throw new TokenSessionEndedError('The session is not running.');
    }
    return {
      sessionId: session.id,
      username: session.username,
      blade: blade.name,
      desktop: (reads, timeoutMs) => blade.connection.openDesktop(agentSessionId, reads, timeoutMs),
      password: session.password,
      tokenHash: record.hash,
    };
  };
}

/** The session once running; a start that failed is an ended session to the viewer, one still going a retry. */
async function running(sessions: Pick<SessionService, 'whenRunning'>, s: SessionRecord): Promise<SessionRecord> {
  try {
    return await sessions.whenRunning(s);
  } catch (err) {
    if (err instanceof SessionStartingError) throw err;
    // Why it failed is the controller's log line ("a background start failed"), not the viewer's business.
    throw new TokenSessionEndedError('The desktop could not be started.', { cause: err });
  }
}
