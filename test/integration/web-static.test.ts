/**
 * controller/web static serving through a real fastify on 127.0.0.1:0 and real HTTP requests (raw paths, so the
 * client does not normalise `..` away): the pages as `npm run build` bundled them (hashed, precompressed assets), their
 * security headers, and threat 6 (path traversal and open redirects). Needs a build first (npm test builds).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebApp, type WebApp } from '../helpers/web-app.js';

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** GET with the path sent exactly as written. */
function rawGet(port: number, path: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

let web: WebApp;
let port: number;

beforeAll(async () => {
  web = await startWebApp();
  port = web.port;
});

afterAll(async () => {
  await web?.close();
});

/** GET with extra request headers; the body as raw bytes (it may be compressed). */
function rawGetBytes(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The hashed script and style URLs a page's HTML refers to, as paths on the server. */
async function assetsOf(page: string): Promise<string[]> {
  const html = (await rawGet(port, page)).body;
  return [...html.matchAll(/(?:src|href)="(\.\.\/assets\/[^"]+)"/g)].map((m) => new URL(m[1]!, `http://controller${page}`).pathname);
}

describe('the bundled pages (npm run build: esbuild, content hashes, precompressed)', () => {
  it('the viewer is one small script, its noVNC chunk and a style sheet, each named by a content hash', async () => {
    const assets = await assetsOf('/viewer/');
    expect(assets.some((a) => /^\/assets\/viewer-[A-Z0-9]{8}\.js$/.test(a)), assets.join()).toBe(true);
    expect(assets.some((a) => /^\/assets\/viewer-[A-Z0-9]{8}\.css$/.test(a)), assets.join()).toBe(true);
    // noVNC comes as a preloaded chunk, so it downloads while the viewer script already opens the WebSocket.
    expect(assets.some((a) => /^\/assets\/chunk-[A-Z0-9]{8}\.js$/.test(a)), assets.join()).toBe(true);
    // No module is fetched from anywhere else: noVNC is inside the bundle.
    const html = (await rawGet(port, '/viewer/')).body;
    expect(html).not.toContain('novnc');
  });

  it('serves assets brotli- or gzip-compressed as the browser accepts, immutable for a year', async () => {
    for (const asset of await assetsOf('/viewer/')) {
      const plain = await rawGetBytes(port, asset, {});
      expect(plain.status, asset).toBe(200);
      expect(plain.headers['content-encoding'], asset).toBeUndefined();
      expect(plain.headers['cache-control'], asset).toBe('public, max-age=31536000, immutable');
      expect(String(plain.headers.vary), asset).toMatch(/accept-encoding/i);
      const br = await rawGetBytes(port, asset, { 'accept-encoding': 'gzip, deflate, br' });
      expect(br.headers['content-encoding'], asset).toBe('br');
      expect(br.headers['content-type'], asset).toBe(plain.headers['content-type']);
      expect(brotliDecompressSync(br.body).equals(plain.body), asset).toBe(true);
      expect(br.body.length, asset).toBeLessThan(plain.body.length);
      const gz = await rawGetBytes(port, asset, { 'accept-encoding': 'gzip' });
      expect(gz.headers['content-encoding'], asset).toBe('gzip');
      expect(gunzipSync(gz.body).equals(plain.body), asset).toBe(true);
    }
  });

  it('the whole viewer is under 80 KiB on the wire with brotli (it was 611 KiB in 55 requests)', async () => {
    let total = 0;
    for (const path of ['/viewer/', ...(await assetsOf('/viewer/'))]) {
      total += (await rawGetBytes(port, path, { 'accept-encoding': 'br' })).body.length;
    }
    expect(total).toBeLessThan(80 * 1024);
  });

  it('the compressed copies have no URL of their own', async () => {
    const [asset] = await assetsOf('/viewer/');
    expect((await rawGet(port, `${asset}.br`)).status).toBe(404);
    expect((await rawGet(port, `${asset}.gz`)).status).toBe(404);
  });

  it('/viewer/ping answers 204 and is never cached (the latency indicator times it)', async () => {
    const res = await rawGet(port, '/viewer/ping');
    expect(res.status).toBe(204);
    expect(res.headers['cache-control']).toBe('no-store');
  });
});

describe('threat 6: no path traversal, no open redirect', () => {
  const packageJson = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  const attempts = [
    '/assets/../package.json',
    '/assets/../../package.json',
    '/assets/../../../../package.json',
    '/assets/%2e%2e/package.json',
    '/assets/%2e%2e%2fpackage.json',
    '/assets/%2e%2e%2f%2e%2e%2fpackage.json',
    '/assets/..%2f..%2f..%2f..%2fpackage.json',
    '/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
    '/assets/..%5c..%5cpackage.json',
    '/assets/%252e%252e/%252e%252e/package.json',
    '/assets/package.json',
    '/assets/../web/viewer/index.html',
    '/novnc/core/rfb.js',
    '/viewer/../../package.json',
    '/viewer/%2e%2e/%2e%2e/package.json',
    '/dashboard/..%2f..%2f..%2fpackage.json',
    '/viewer/%2e%2e/dashboard/../../../../etc/passwd',
  ];
  for (const path of attempts) {
    it(`${path} reveals nothing outside the served folders`, async () => {
      const res = await rawGet(port, path);
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.body).not.toContain('"name": "vncdispatch"');
      expect(res.body).not.toContain(packageJson.slice(0, 40));
      expect(res.body).not.toMatch(/root:.*:0:0:/);
    });
  }

  const redirects = [
    '//evil.example',
    '//evil.example/',
    '/assets//evil.example',
    '/assets//evil.example/',
    '/assets/x//evil.example/',
    '/viewer//evil.example',
    '/dashboard//evil.example/%2e%2e',
    '/%2f%2fevil.example',
    '/%5cevil.example',
    '/\\evil.example',
    '/assets',
    '/assets/',
  ];
  for (const path of redirects) {
    it(`${path} never redirects off-site`, async () => {
      const res = await rawGet(port, path);
      const location = res.headers.location;
      if (location !== undefined) {
        // Only the fixed relative targets ('viewer/', 'dashboard/'): no scheme, no host, no leading slash or backslash.
        expect(String(location)).toMatch(/^[a-z]+\/$/);
      }
      expect(res.status === 200 && res.body.includes('evil.example')).toBe(false);
    });
  }

  it('redirects / to /dashboard/ and the slash-less page paths to their folders, with fixed relative targets', async () => {
    // Relative to the request's folder, so they also work under a reverse proxy's path prefix.
    for (const [path, target] of [
      ['/', 'dashboard/'],
      ['/viewer', 'viewer/'],
      ['/dashboard', 'dashboard/'],
      ['/?next=https://evil.example', 'dashboard/'],
      ['/viewer?next=//evil.example', 'viewer/'],
    ] as const) {
      const res = await rawGet(port, path);
      expect(res.status, path).toBeGreaterThanOrEqual(301);
      expect(res.status, path).toBeLessThanOrEqual(308);
      expect(res.headers.location, path).toBe(target);
    }
  });
});

describe('viewer and dashboard pages', () => {
  for (const page of ['/viewer/', '/dashboard/']) {
    it(`${page} is HTML with a strict CSP, no framing, no referrer`, async () => {
      const res = await rawGet(port, page);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/html/);
      const csp = String(res.headers['content-security-policy']);
      const directives = new Map(csp.split(';').map((d) => {
        const [name, ...values] = d.trim().split(/\s+/);
        return [name, values] as const;
      }));
      expect(directives.get('default-src')).toEqual(["'none'"]);
      // 'self' and, for each script the build inlined, its exact hash: never 'unsafe-inline'.
      const scriptSrc = directives.get('script-src') ?? [];
      expect(scriptSrc[0]).toBe("'self'");
      for (const source of scriptSrc.slice(1)) expect(source).toMatch(/^'sha256-[A-Za-z0-9+/]{43}='$/);
      expect(directives.get('frame-ancestors')).toEqual(["'none'"]);
      expect(directives.get('connect-src')).toEqual(["'self'"]);
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['cache-control']).toBe('no-cache');
    });

    it(`${page} runs only its bundled scripts and inline scripts its CSP names by hash; no handler or style`, async () => {
      const { body, headers } = await rawGet(port, page);
      const allowed = String(headers['content-security-policy']).split(';').find((d) => d.trim().startsWith('script-src'))!
        .trim().split(/\s+/).slice(2);
      const scripts = [...body.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
      expect(scripts.length).toBeGreaterThan(0);
      for (const [, attrs, content] of scripts) {
        if (content) {
          // An inlined script: the browser runs it only because the policy names its exact SHA-256.
          expect(attrs?.trim()).toBe('');
          expect(allowed).toContain(`'sha256-${createHash('sha256').update(content).digest('base64')}'`);
        } else {
          expect(attrs).toMatch(/\bsrc="\.\.\/assets\/[a-z]+-[A-Z0-9]{8}\.js"/); // a bundled, content-hashed file of this server
        }
      }
      expect(body).not.toMatch(/\son[a-z]+\s*=/i);
      expect(body).not.toMatch(/\sstyle\s*=/i);
      expect(body).not.toMatch(/<style\b/i);
    });
  }

  it('serves the page scripts as JavaScript modules', async () => {
    for (const page of ['/viewer/', '/dashboard/']) {
      const scripts = (await assetsOf(page)).filter((a) => a.endsWith('.js'));
      expect(scripts.length, page).toBeGreaterThan(0);
      for (const script of scripts) {
        const res = await rawGet(port, script);
        expect(res.status, script).toBe(200);
        expect(res.headers['content-type'], script).toMatch(/javascript/);
      }
    }
  });

  for (const page of ['/viewer/', '/dashboard/']) {
    it(`${page} refers to its script and style by relative URLs that resolve to served files`, async () => {
      const html = (await rawGet(port, page)).body;
      const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!).filter((r) => !r.startsWith('data:'));
      expect(refs.length).toBeGreaterThanOrEqual(2);
      for (const ref of refs) {
        expect(ref, ref).not.toMatch(/^\/|^[a-z]+:/);
        expect((await rawGet(port, new URL(ref, `http://controller${page}`).pathname)).status, ref).toBe(200);
      }
    });
  }
});
