/**
 * POST /api/v1/sessions as a portal would: on its own connection, and after a 503 again once its Retry-After has
 * passed, until the user is served or a deadline passes.
 */
import { request as httpRequest } from 'node:http';
import { jsonOrNull } from './controller-checks.js';
import type { ControllerHandle } from './controller-process.js';

export interface PostAnswer {
  status: number;
  body: any;
  text: string;
  retryAfter: string | undefined;
}

/**
 * POST /api/v1/sessions on a connection of its own. A retry follows a burst whose answers came over up to 45 s, so
 * fetch's pool holds connections the controller has since closed for being idle (--keep-alive-timeout-ms), and on a
 * loaded runner fetch reuses one before it has read the close: 'other side closed', a client-side race, not an answer.
 */
export function postOnNewConnection(c: ControllerHandle, username: string): Promise<PostAnswer> {
  const url = new URL('/api/v1/sessions', c.url);
  const payload = JSON.stringify({ username });
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: false, headers: { authorization: c.headers.authorization!,
      'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, body: jsonOrNull(text), text, retryAfter: res.headers['retry-after'] });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * Retries a 503 after its Retry-After until another answer comes or the next wait would pass `deadline`
 * (performance.now() milliseconds); returns the last answer. `onAnswer` sees every answer with its try number. A 503
 * without a numeric Retry-After rejects: a portal would not know when to come back.
 */
export async function postUntilServed(c: ControllerHandle, username: string, deadline: number,
  onAnswer?: (answer: PostAnswer, tries: number) => void): Promise<PostAnswer> {
  for (let tries = 1; ; tries++) {
    const r = await postOnNewConnection(c, username);
    onAnswer?.(r, tries);
    if (r.status !== 503) return r;
    if (!/^\d+$/.test(r.retryAfter ?? '')) throw new Error(`503 without Retry-After: ${r.text}`);
    const waitMs = Number(r.retryAfter) * 1000;
    if (performance.now() + waitMs > deadline) return r;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}
