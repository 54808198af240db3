/**
 * The browser-facing pages of the controller: noVNC (from the installed @novnc/novnc package), the viewer page the
 * API's viewerUrl points at, its reconnect endpoint, and the operators' blade/session dashboard.
 *
 * Everything is registered in one encapsulated fastify scope so its security headers and error format apply to these
 * routes only. Static files are served with `wildcard: false`: @fastify/static globs the folders once at start-up and
 * adds one route per existing file, so no request path can reach anything else (threat 6: no traversal, no redirect).
 */
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import type { Config } from '../config.js';
import type { Store } from '../store/store.js';
import { webErrorHandler } from './error-reply.js';
import { novncRoot, staticRoot } from './paths.js';
import { registerReconnect, type ReconnectTokenIssuer } from './reconnect.js';
import { applySecurityHeaders } from './security-headers.js';

/**
 * The controller's Config, every field optional so tests can pass only what they need; the web pages read only
 * `viewerReconnectPerMinute` (not a controller flag yet: defaults to 30).
 */
export type WebConfig = Partial<Config> & {
  /** Viewer reconnect requests allowed per client IP per minute. */
  viewerReconnectPerMinute?: number;
};

export interface WebDeps {
  store: Store;
  tokens: ReconnectTokenIssuer;
  log: Logger;
  config: WebConfig;
}

/** noVNC is not content-hashed, so cache for an hour and revalidate with ETag/Last-Modified after that. */
const NOVNC_MAX_AGE_MS = 60 * 60 * 1000;

/**
 * Serves `/novnc/core/**`, `/novnc/vendor/**`, `/viewer/`, `POST /viewer/reconnect`, `/dashboard/` and redirects `/`
 * to `/dashboard/`. Every URL in the pages and every redirect is relative, so the whole controller also works behind
 * a reverse proxy that serves it under a path prefix (`https://portal.example.org/desktops/` → `/`).
 */
export async function registerWeb(app: FastifyInstance, deps: WebDeps): Promise<void> {
  const log = deps.log.child({ module: 'web' });
  const novnc = novncRoot();
  const pages = staticRoot();

  await app.register(async (scope) => {
    scope.setErrorHandler(webErrorHandler(log));
    scope.addHook('onRequest', async (_request, reply) => {
      applySecurityHeaders(reply);
    });

    const common = {
      wildcard: false,
      redirect: false,
      dotfiles: 'ignore',
      serveDotFiles: false,
      list: false,
      decorateReply: false,
      acceptRanges: false,
    } as const;
    for (const dir of ['core', 'vendor'] as const) {
      await scope.register(fastifyStatic, {
        ...common,
        root: `${novnc}/${dir}`,
        prefix: `/novnc/${dir}/`,
        index: false,
        maxAge: NOVNC_MAX_AGE_MS,
        globIgnore: ['**/*.md', '**/LICENSE*'],
      });
    }
    // The pages change with the controller: always revalidate (cheap 304s), so an upgrade takes effect at once.
    for (const page of ['viewer', 'dashboard'] as const) {
      await scope.register(fastifyStatic, {
        ...common,
        root: `${pages}/${page}`,
        prefix: `/${page}/`,
        index: ['index.html'],
        cacheControl: false,
        setHeaders: (reply) => reply.header('cache-control', 'no-cache'),
      });
      // A constant target relative to the request's folder (`/viewer` → `viewer/`, so `/prefix/viewer` →
      // `/prefix/viewer/`): nothing from the request ends up in Location. Browsers keep the #fragment.
      scope.get(`/${page}`, async (_request, reply) => reply.redirect(`${page}/`, 301));
    }
    scope.get('/', async (_request, reply) => reply.redirect('dashboard/', 302));

    registerReconnect(scope, { store: deps.store, tokens: deps.tokens, log }, {
      ...(deps.config.viewerReconnectPerMinute !== undefined && { perIpPerMinute: deps.config.viewerReconnectPerMinute }),
    });
  });
}
