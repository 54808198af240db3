/**
 * Cross-site WebSocket hijacking defence (README, Security: threat 5; Nova CVE-2015-0259): browsers attach the page's
 * Origin to every WebSocket request, so a page on another site cannot open a desktop connection even if it got hold
 * of a token.
 *
 * A request WITHOUT an Origin header is allowed: every browser sends one on WebSocket requests, so its absence means
 * a non-browser client (websockify-style tools, a VNC viewer with WebSocket support, scripts). Such a client cannot be
 * a victim of cross-site hijacking and still needs a valid token. `Origin: null` (sandboxed frames, file: pages) is
 * a browser and is refused unless listed explicitly.
 */
import type { IncomingMessage } from 'node:http';

/** Scheme+host+port of an origin string or URL, normalised (lower case, default port dropped); null if invalid. */
export function normaliseOrigin(origin: string): string | null {
  if (origin === 'null') return 'null';
  try {
    const o = new URL(origin).origin;
    return o === 'null' ? null : o;
  } catch {
    return null;
  }
}

/**
 * The controller's own origin as the browser sees it: scheme and Host of this request; behind a trusted reverse
 * proxy, X-Forwarded-Proto / X-Forwarded-Host when present.
 */
export function ownOrigin(req: IncomingMessage, peerIsTrustedProxy: boolean): string | null {
  const first = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h)?.split(',')[0]?.trim() || undefined;
  const encrypted = 'encrypted' in req.socket && Boolean((req.socket as { encrypted?: boolean }).encrypted);
  const proto = (peerIsTrustedProxy && first(req.headers['x-forwarded-proto'])) || (encrypted ? 'https' : 'http');
  const host = (peerIsTrustedProxy && first(req.headers['x-forwarded-host'])) || req.headers.host;
  if (!host || (proto !== 'http' && proto !== 'https')) return null;
  return normaliseOrigin(`${proto}://${host}`);
}

/** Whether the request's Origin may connect. `allowed` (normalised) empty means "only the controller's own origin". */
export function originAllowed(req: IncomingMessage, allowed: ReadonlySet<string>, peerIsTrustedProxy: boolean): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  const normalised = normaliseOrigin(origin);
  if (normalised === null) return false;
  if (allowed.size > 0) return allowed.has(normalised);
  return normalised === ownOrigin(req, peerIsTrustedProxy);
}
