/**
 * The browser-facing pages of the controller, as `npm run build` bundled them into dist/web/ (see bundle.ts): the
 * viewer page the API's viewerUrl points at, its reconnect and latency endpoints, and the operators' dashboard.
 *
 * Everything is registered in one encapsulated fastify scope so its security headers and error format apply to these
 * routes only. Static files are served with `wildcard: false`: @fastify/static globs the folders once at start-up and
 * adds one route per existing file, so no request path can reach anything else (threat 6: no traversal, no redirect).
 * The build wrote a brotli and a gzip copy of every text file; `preCompressed` sends the best one the browser accepts
 * (Vary: Accept-Encoding), so nothing is compressed per request.
 */
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import type { Config } from '../config.js';
import type { Store } from '../store/store.js';
import { errorHandler } from '../error-reply.js';
import { webRoot } from './paths.js';
import { registerReconnect, type ReconnectTokenIssuer } from './reconnect.js';
import { readInlineScriptHashes, securityHeaders } from './security-headers.js';

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

/** The pages dist/web/ holds (each a folder with index.html). */
export const PAGES = ['viewer', 'dashboard'] as const;

/** Assets carry a content hash in their name: a changed file is a new URL, so browsers may keep them for a year. */
export const IMMUTABLE = 'public, max-age=31536000, immutable';

/**
 * Serves `/assets/*` (immutable), `/viewer/` and `/dashboard/` (revalidated: cheap 304s, so an upgrade takes effect
 * at once), `POST /viewer/reconnect`, `/viewer/ping`, and redirects `/` to `/dashboard/`. Every URL in the pages and
 * every redirect is relative, so the whole controller also works behind a reverse proxy that serves it under a path
 * prefix (`https://portal.example.org/desktops/` → `/`).
 */
export async function registerWeb(app: FastifyInstance, deps: WebDeps): Promise<void> {
  const log = deps.log.child({ module: 'web' });
  const root = webRoot();
  const headers = securityHeaders(readInlineScriptHashes(root));

  await app.register(async (scope) => {
    // The app's own handler (controller/error-reply.ts), set here too so the pages answer the same on their own.
    scope.setErrorHandler(errorHandler(log));
    // JSON bodies only (POST /viewer/reconnect): anything else is 415, as documented.
    scope.removeContentTypeParser('text/plain');
    scope.addHook('onRequest', async (_request, reply) => {
      reply.headers(headers);
    });

    const common = {
      wildcard: false,
      redirect: false,
      serveDotFiles: false,
      list: false,
      decorateReply: false,
      acceptRanges: false,
      preCompressed: true,
      // The compressed copies are chosen by preCompressed, never addressed by URL.
      globIgnore: ['**/*.br', '**/*.gz'],
      dotfiles: 'ignore' as const,
    };
    await scope.register(fastifyStatic, {
      ...common,
      root: `${root}/assets`,
      prefix: '/assets/',
      index: false,
      cacheControl: false,
      setHeaders: (reply) => {
        reply.header('cache-control', IMMUTABLE);
      },
    });
    for (const page of PAGES) {
      await scope.register(fastifyStatic, {
        ...common,
        root: `${root}/${page}`,
        prefix: `/${page}/`,
        index: ['index.html'],
        cacheControl: false,
        setHeaders: (reply) => {
          reply.header('cache-control', 'no-cache');
        },
      });
      // A constant target relative to the request's folder (`/viewer` → `viewer/`, so `/prefix/viewer` →
      // `/prefix/viewer/`): nothing from the request ends up in Location. Browsers keep the #fragment.
      scope.get(`/${page}`, async (_request, reply) => reply.redirect(`${page}/`, 301));
    }
    scope.get('/', async (_request, reply) => reply.redirect('dashboard/', 302));

    // The viewer's latency indicator times this round trip: no body, no store access, never cached.
    scope.get('/viewer/ping', async (_request, reply) => reply.header('cache-control', 'no-store').code(204).send());

    registerReconnect(scope, { store: deps.store, tokens: deps.tokens, log }, {
      ...(deps.config.viewerReconnectPerMinute !== undefined && { perIpPerMinute: deps.config.viewerReconnectPerMinute }),
    });
  });
}
