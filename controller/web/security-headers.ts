/**
 * Response headers for everything controller/web serves. The pages load only same-origin ES modules and styles,
 * plus the few scripts the build inlined into them (allowed one by one by their SHA-256, never by 'unsafe-inline'),
 * so the policy forbids any other inline script and all inline style, framing (clickjacking the desktop) and leaking
 * the URL (whose fragment carries the token and reconnect key, though browsers never send fragments) through the
 * Referer.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { INLINE_HASHES_FILE } from './paths.js';

/**
 * The Content-Security-Policy for pages whose inlined scripts have these CSP hash sources (`'sha256-…'`).
 * `connect-src 'self'` covers same-host ws:/wss: in CSP Level 3 browsers (Chromium, Firefox, Safari >= 15.4), so the
 * viewer can reach only this controller's /websockify. noVNC draws cursors and JPEG rects through data: images.
 */
export function contentSecurityPolicy(inlineScriptHashes: readonly string[]): string {
  return [
    "default-src 'none'",
    ["script-src 'self'", ...inlineScriptHashes].join(' '),
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** The hashes `npm run build` wrote beside the pages in `webRoot`; only well-formed SHA-256 sources are taken. */
export function readInlineScriptHashes(webRoot: string): string[] {
  const list: unknown = JSON.parse(readFileSync(join(webRoot, INLINE_HASHES_FILE), 'utf8'));
  if (!Array.isArray(list) || !list.every((h) => typeof h === 'string' && /^'sha256-[A-Za-z0-9+/]{43}='$/.test(h))) {
    throw new Error(`${INLINE_HASHES_FILE} in ${webRoot} is not a list of 'sha256-…' sources: rebuild with npm run build`);
  }
  return list as string[];
}

/** Every header the pages and their assets carry, for pages whose inlined scripts have these hashes. */
export function securityHeaders(inlineScriptHashes: readonly string[]): Readonly<Record<string, string>> {
  return {
    'content-security-policy': contentSecurityPolicy(inlineScriptHashes),
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
    'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
  };
}
