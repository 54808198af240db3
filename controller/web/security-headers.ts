/**
 * Response headers for everything controller/web serves. The pages load only same-origin ES modules and styles,
 * so the policy forbids inline script and style, framing (clickjacking the desktop) and leaking the URL (whose
 * fragment carries the token and reconnect key, though browsers never send fragments) through the Referer.
 */
import type { FastifyReply } from 'fastify';

/**
 * `connect-src 'self'` covers same-host ws:/wss: in CSP Level 3 browsers (Chromium, Firefox, Safari >= 15.4), so the
 * viewer can reach only this controller's /websockify. noVNC draws cursors and JPEG rects through data: images.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};

/** Sets SECURITY_HEADERS on a reply. */
export function applySecurityHeaders(reply: FastifyReply): void {
  reply.headers(SECURITY_HEADERS);
}
