/**
 * What the API shows of a session. Built field by field from the record, so the password (and anything added to the
 * record later) can only appear if someone adds it here on purpose.
 */
import type { SessionConnectionStats } from '../proxy/index.js';
import type { SessionGrant } from '../sessions/session-service.js';
import type { SessionRecord } from '../store/store.js';

export interface SessionView {
  id: string;
  username: string;
  blade: string | null;
  display: number | null;
  state: SessionRecord['state'];
  clientIp: string | null;
  createdAt: string;
  endedAt: string | null;
  endReason: string | null;
  /** Open viewer connections through this controller, bytes each way over them, and their client addresses. */
  viewers: number;
  bytesDown: number;
  bytesUp: number;
  viewerIps: string[];
}

export interface SessionGrantView extends SessionView {
  token: string;
  tokenExpiresAt: string;
  websocketPath: string;
  viewerUrl: string;
}

const NO_CONNECTIONS: SessionConnectionStats = { viewers: 0, bytesDown: 0, bytesUp: 0, viewerIps: [] };

export function sessionView(s: SessionRecord, stats: SessionConnectionStats = NO_CONNECTIONS): SessionView {
  return {
    id: s.id,
    username: s.username,
    blade: s.blade,
    display: s.display,
    state: s.state,
    clientIp: s.clientIp,
    createdAt: s.createdAt.toISOString(),
    endedAt: s.endedAt ? s.endedAt.toISOString() : null,
    endReason: s.endReason,
    viewers: stats.viewers,
    bytesDown: stats.bytesDown,
    bytesUp: stats.bytesUp,
    viewerIps: [...stats.viewerIps],
  };
}

/** The POST answer: the secrets go in the viewer URL's #fragment, which browsers never send to a server. */
export function grantView(g: SessionGrant, publicUrl: string): SessionGrantView {
  const token = encodeURIComponent(g.token);
  const fragment = `session=${encodeURIComponent(g.session.id)}&token=${token}&key=${encodeURIComponent(g.reconnectKey)}`;
  return {
    ...sessionView(g.session),
    token: g.token,
    tokenExpiresAt: g.tokenExpiresAt.toISOString(),
    websocketPath: `/websockify?token=${token}`,
    viewerUrl: `${publicUrl}/viewer/#${fragment}`,
  };
}
