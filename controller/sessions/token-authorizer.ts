/**
 * Turns a connection token into the proxy's target: the token is consumed (single use, bound to its client address),
 * and the target comes only from its session record and that session's registered blade, never from the request
 * (README, Security: threat 4). The desktop is reached only through the blade agent's mutual-TLS relay: the proxy
 * opens no connection of its own.
 */
import type { BladeRegistry } from '../blades/registry.js';
import { TokenSessionEndedError } from '../errors.js';
import type { ProxyTarget } from '../proxy/target.js';
import type { TokenService } from '../tokens/index.js';

/** The proxy's `authorize` for this controller's tokens and blades. */
export function tokenAuthorizer(tokens: Pick<TokenService, 'consume'>, blades: Pick<BladeRegistry, 'get'>):
  (token: string, clientIp: string) => Promise<ProxyTarget> {
  return async (token, clientIp) => {
    const { session, token: record } = await tokens.consume(token, clientIp);
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
