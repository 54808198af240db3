/**
 * controller/web static serving through a real fastify on 127.0.0.1:0 and real HTTP requests (raw paths, so the
 * client does not normalise `..` away): noVNC from the installed package, the viewer and dashboard pages, their
 * security headers, and threat 6 (path traversal and open redirects).
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createRequire } from 'node:module';
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

describe('noVNC from the installed @novnc/novnc package', () => {
  it('serves core/rfb.js byte for byte from node_modules, as JavaScript, with a cache lifetime', async () => {
    const installed = readFileSync(createRequire(import.meta.url).resolve('@novnc/novnc'), 'utf8');
    const res = await rawGet(port, '/novnc/core/rfb.js');
    expect(res.status).toBe(200);
    expect(res.body).toBe(installed);
    expect(res.headers['content-type']).toMatch(/^(text|application)\/javascript/);
    expect(res.headers['cache-control']).toMatch(/max-age=\d+/);
    expect(res.headers.etag).toBeTruthy();
  });

  it('serves the vendored pako that noVNC imports', async () => {
    const res = await rawGet(port, '/novnc/vendor/pako/lib/zlib/inflate.js');
    expect(res.status).toBe(200);
    expect(res.body).toContain('export');
  });

  it('answers a conditional request with 304', async () => {
    const first = await rawGet(port, '/novnc/core/websock.js');
    const second = await new Promise<number>((resolve, reject) => {
      httpRequest(
        { host: '127.0.0.1', port, path: '/novnc/core/websock.js', headers: { 'if-none-match': String(first.headers.etag) } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      )
        .on('error', reject)
        .end();
    });
    expect(second).toBe(304);
  });
});

describe('threat 6: no path traversal, no open redirect', () => {
  const packageJson = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  const attempts = [
    '/novnc/../package.json',
    '/novnc/core/../../package.json',
    '/novnc/core/../../../../package.json',
    '/novnc/%2e%2e/package.json',
    '/novnc/%2e%2e%2fpackage.json',
    '/novnc/core/%2e%2e%2f%2e%2e%2fpackage.json',
    '/novnc/core/..%2f..%2f..%2f..%2fpackage.json',
    '/novnc/core/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
    '/novnc/core/..%5c..%5cpackage.json',
    '/novnc/core/%252e%252e/%252e%252e/package.json',
    '/novnc/package.json',
    '/novnc/core/../package.json',
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
    '/novnc//evil.example',
    '/novnc//evil.example/',
    '/novnc/core//evil.example/',
    '/viewer//evil.example',
    '/dashboard//evil.example/%2e%2e',
    '/%2f%2fevil.example',
    '/%5cevil.example',
    '/\\evil.example',
    '/novnc/core',
    '/novnc/core/',
    '/novnc',
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
      expect(directives.get('script-src')).toEqual(["'self'"]);
      expect(directives.get('frame-ancestors')).toEqual(["'none'"]);
      expect(directives.get('connect-src')).toEqual(["'self'"]);
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['cache-control']).toBe('no-cache');
    });

    it(`${page} has no inline script, handler or style, so the CSP needs no exceptions`, async () => {
      const { body } = await rawGet(port, page);
      const scripts = [...body.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
      expect(scripts.length).toBeGreaterThan(0);
      for (const [, attrs, content] of scripts) {
        expect(attrs).toMatch(/\bsrc="[a-z-]+\.js"/); // a file of this page's own folder
        expect(content.trim()).toBe('');
      }
      expect(body).not.toMatch(/\son[a-z]+\s*=/i);
      expect(body).not.toMatch(/\sstyle\s*=/i);
      expect(body).not.toMatch(/<style\b/i);
    });
  }

  it('serves the page scripts as JavaScript modules whose relative imports (noVNC) resolve to served files', async () => {
    const viewer = await rawGet(port, '/viewer/viewer.js');
    expect(viewer.status).toBe(200);
    expect(viewer.headers['content-type']).toMatch(/javascript/);
    const specifier = /from '([^']+)'/.exec(viewer.body)?.[1];
    // Relative, so it also resolves under a reverse proxy's path prefix.
    expect(specifier).toMatch(/^\.\.\//);
    const rfb = await rawGet(port, new URL(specifier!, 'http://controller/viewer/viewer.js').pathname);
    expect(rfb.status).toBe(200);
    expect(rfb.headers['content-type']).toMatch(/javascript/);
    const dashboard = await rawGet(port, '/dashboard/dashboard.js');
    expect(dashboard.status).toBe(200);
    expect(dashboard.headers['content-type']).toMatch(/javascript/);
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
