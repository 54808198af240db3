/**
 * Builds the controller (fastify testing-guide style: built separately from listening): REST API, blade registry and
 * health, session orchestration, reconciliation, the WebSocket-to-VNC proxy on the HTTP server's 'upgrade' event,
 * and the browser pages. The store is passed in (and closed by whoever created it).
 */
import type { AddressInfo } from 'node:net';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { apiKeyAuth, WWW_AUTHENTICATE } from './api/auth.js';
import { bladesRoutes } from './api/blades-routes.js';
import { BladeNetworks } from './blades/blade-networks.js';
import { eventsRoute } from './api/events-route.js';
import { healthRoutes } from './api/health-routes.js';
import { legacyRoute } from './api/legacy-route.js';
import { authErrors, sharedSchemas } from './api/schemas.js';
import { sessionsRoutes } from './api/sessions-routes.js';
import { createAgentCredentials } from './agent-client/agent-client.js';
import { BladeRegistry } from './blades/registry.js';
import type { Config } from './config.js';
import { clientErrorHandler, connectRefusal, errorHandler, notFoundHandler } from './error-reply.js';
import { ConnectionGate } from './http-connections.js';
import { BadRequestError } from './errors.js';
import type { Logger } from './log.js';
import { FleetWatch } from './events/fleet-watch.js';
import { createMetrics, type Metrics } from './metrics.js';
import { VncProxy, type ProxyTarget } from './proxy/index.js';
import { Reconciler } from './sessions/reconciler.js';
import { SessionService } from './sessions/session-service.js';
import { tokenAuthorizer } from './sessions/token-authorizer.js';
import type { Store } from './store/store.js';
import { isWellFormedSecret, TokenService } from './tokens/index.js';
import { registerWeb } from './web/index.js';

export interface BuildAppOptions {
  config: Readonly<Config>;
  store: Store;
  log: Logger;
  /** Defaults to a fresh registry with process metrics. */
  metrics?: Metrics;
}

export interface ControllerApp {
  app: FastifyInstance;
  proxy: VncProxy;
  blades: BladeRegistry;
  /** The cap on open TCP connections (HTTP and WebSocket). */
  connections: ConnectionGate;
  sessions: SessionService;
  reconciler: Reconciler;
  tokens: TokenService;
  metrics: Metrics;
  fleet: FleetWatch;
  /** The base URL for viewer links (the listening address when --public-url was not given). */
  publicUrl(): string;
  /** Stops timers, closes connections and the HTTP server; does not close the store. */
  close(): Promise<void>;
}

/**
 * Every REST body is an object of strings. fastify's validator coerces types (['x'] -> 'x', true -> 'true') so that
 * query strings work; checking bodies before validation keeps a wrong type a 400 instead of a coerced value.
 */
async function stringFieldsOnly(request: FastifyRequest): Promise<void> {
  const body = request.body;
  if (body === null || body === undefined || typeof body !== 'object' || Array.isArray(body)) return;
  for (const [key, value] of Object.entries(body)) {
    if (typeof value !== 'string') throw new BadRequestError(`invalid request: body/${key} must be string`);
  }
}

export async function buildApp(options: BuildAppOptions): Promise<ControllerApp> {
  const { config, store, log } = options;
  const metrics = options.metrics ?? createMetrics();

  // Typed as fastify's base logger so the instance is the plain FastifyInstance the routes are written against.
  const httpLog: FastifyBaseLogger = log.child({ module: 'http' });
  const frameworkError = errorHandler(log.child({ module: 'http' }));
  const app = Fastify({
    loggerInstance: httpLog,
    // REST bodies only; the proxy has its own limit (maxPayload).
    bodyLimit: config.maxBodyBytes,
    connectionTimeout: config.httpIdleTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // Node checks header and request deadlines on this interval (default 30 s): a quarter of the header timeout keeps
    // a slow client's 408 close to its deadline.
    // requireHostHeader: Node answers an HTTP/1.1 request without a Host header itself, with a bare 400 and no body,
    // before fastify sees it; the onRequest hook below refuses it instead, with the documented 400 and a log line.
    http: { headersTimeout: config.headersTimeoutMs, connectionsCheckingInterval: Math.max(50, Math.floor(config.headersTimeoutMs / 4)),
      requireHostHeader: false },
    clientErrorHandler: clientErrorHandler(log.child({ module: 'http' })),
    // A target the router cannot decode (`POST http://`) is answered by fastify before setErrorHandler applies, in
    // fastify's own body format; this sends it through the same renderer as every other error.
    frameworkErrors: (err, request, reply) => {
      void frameworkError(err, request, reply);
    },
    return503OnClosing: true,
    forceCloseConnections: true,
    trustProxy: config.trustProxy.length ? [...config.trustProxy] : false,
    // Reject unknown properties instead of silently dropping them, so a misspelt field is an error the caller sees.
    ajv: { customOptions: { removeAdditional: false, allErrors: false } },
  });

  // Before the proxy's 'upgrade' listener, so the gate sees an upgrade before anything else does.
  const connections = new ConnectionGate(app.server, config.maxConnections, log.child({ module: 'http' }));
  const tokens = new TokenService(store, { ttlMs: config.tokenTtlSeconds * 1000, singleUse: !config.tokenReuse });
  const blades = new BladeRegistry({ store, config, credentials: createAgentCredentials(config.agentTls), log, metrics });
  const sessions = new SessionService({ store, blades, tokens, config, log, metrics });
  const reconciler = new Reconciler({ store, blades, sessions, config, log });

  const publicUrl = (): string => {
    if (config.publicUrlGiven) return config.publicUrl;
    const addr = app.server.address() as AddressInfo | null;
    if (!addr || typeof addr === 'string') return config.publicUrl;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `http://${host}:${addr.port}`;
  };

  const proxy = new VncProxy({
    log,
    registry: metrics.registry,
    allowedOrigins: [...config.allowedOrigins],
    trustProxy: [...config.trustProxy],
    maxConnectionsPerIp: config.maxConnectionsPerIp,
    idleTimeoutMs: config.idleTimeoutSeconds * 1000,
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    connectTimeoutMs: config.desktopConnectTimeoutMs,
    desktopGoneGraceMs: config.desktopGoneGraceMs,
    maxReadBytes: config.maxDesktopReadBytes,
    heartbeatMs: config.wsHeartbeatMs,
    maxPayload: config.maxWsMessageBytes,
    badTokenBackoff: { limit: config.badTokenLimit, windowMs: config.badTokenWindowMs },
    revalidateIntervalMs: config.revalidateIntervalMs,
    wellFormedToken: isWellFormedSecret,
    authorize: tokenAuthorizer(tokens, blades, sessions),
    // Live connections stay open while their session runs and their token is not revoked: one batched query.
    revalidate: (targets: ProxyTarget[]): Promise<Set<string>> => store.activeTokenHashes(targets.map((t) => t.tokenHash)),
  });
  blades.on('desktopEnded', (blade, agentSessionId, reason) => {
    sessions.desktopEnded(blade.name, agentSessionId, reason).catch((err: unknown) =>
      log.error({ err, blade: blade.name, agentSessionId }, 'could not end the session of a desktop that ended'));
  });
  blades.on('watching', (blade) => {
    if (blade.health.state === 'UP') void reconciler.reconcileBlade(blade);
  });
  app.server.on('upgrade', (req, socket, head) => proxy.handleUpgrade(req, socket, head));
  app.server.on('connect', connectRefusal(log.child({ module: 'http' })));
  // Node answers an Expect other than 100-continue itself, with a bare 417 and no body. RFC 9110 §10.1.1 lets a server
  // ignore an expectation it does not know, so the request goes to its route like any other and gets its answer.
  app.server.on('checkExpectation', (req, res) => app.server.emit('request', req, res));
  // RFC 9112 §9.6: a half-closed connection neither ends a request nor says the client stopped wanting the answer.
  // Node's http.Server (this flag, which its own code reads, is false by default and missing from the typings) drops
  // the request of a client that shuts down its sending side after the request (`nc -N`, many scripts), so such a
  // client got nothing at all from any route that answers asynchronously (the viewer page, the API). With it set the
  // answer goes out and Node closes the connection after it; a half-close with no request in progress still closes
  // at once, and a half-sent request still gets its 400.
  (app.server as typeof app.server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;

  metrics.watchBlades(() => blades.list().map((b) => ({ name: b.name, adminState: b.record.adminState, capacity: b.status?.capacity ?? 0 })));
  const fleet = new FleetWatch({ store, blades, connections: () => proxy.sessionStats(), log, intervalMs: config.eventsIntervalMs });
  blades.on('change', () => fleet.poke());
  // A session that ends here drops its viewers at once, and live views hear of it.
  sessions.on('ended', (id, reason) => {
    proxy.closeSession(id, reason);
    fleet.poke();
  });

  // RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without Host (see requireHostHeader above).
  app.addHook('onRequest', async (request) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      throw new BadRequestError('an HTTP/1.1 request needs a Host header');
    }
  });
  // A browser that once reached an https public URL keeps using https (no downgrade through a hostile network).
  if (config.publicUrl.startsWith('https://')) {
    app.addHook('onRequest', async (_request, reply) => {
      reply.header('strict-transport-security', 'max-age=31536000');
    });
  }
  // Each documented route says which API-key role it needs, from the same option the auth hook enforces.
  app.addHook('onRoute', (route) => {
    const role = route.config?.role;
    const schema = route.schema as { description?: string; security?: unknown[] } | undefined;
    if (!schema || (schema.security && schema.security.length === 0)) return;
    const needs = `Needs an API key with role \`${role ?? 'admin'}\` or higher.`;
    schema.description = schema.description ? `${schema.description}\n\n${needs}` : needs;
  });

  app.setErrorHandler(errorHandler(log.child({ module: 'http' })));
  app.setNotFoundHandler(notFoundHandler);
  app.addHook('onSend', async (_request, reply) => {
    // Every 401 carries its challenge (RFC 9110 §11.6.1), whichever path produced it.
    if (reply.statusCode === 401 && !reply.hasHeader('www-authenticate')) reply.header('www-authenticate', WWW_AUTHENTICATE);
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpRequests.inc({ method: request.method, route: request.routeOptions.url ?? 'none', status: reply.statusCode });
  });

  for (const schema of sharedSchemas) app.addSchema(schema);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'vncdispatch controller',
        description: 'Dispatches Linux desktops (TigerVNC on blades) to browsers. Errors: {"error":{"code","message"}}.',
        version: '1',
      },
      servers: [{ url: config.publicUrl, description: 'This controller (--public-url).' }],
      components: {
        securitySchemes: {
          apiKey: {
            type: 'http',
            scheme: 'bearer',
            description: 'An API key with a role: read (see), operate (sessions, cordon/drain) or admin (blades).',
          },
        },
      },
      security: [{ apiKey: [] }],
    },
    // Only the REST API (tagged routes) is documented; the browser pages are not an API.
    hideUntagged: true,
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });

  await app.register(healthRoutes, { store, blades, registry: metrics.registry, readyCheckTtlMs: config.readyCheckTtlMs });
  await app.register(async (api) => {
    // Set before authentication, so refusals carry it too: API answers hold tokens or describe sessions.
    api.addHook('onRequest', async (_request, reply) => {
      reply.header('cache-control', 'no-store');
    });
    api.addHook('onRequest', apiKeyAuth(config.apiKeys));
    // Bodies are JSON only: without a text/plain parser, any other content type is 415 VD_ERR_UNSUPPORTED_MEDIA_TYPE.
    api.removeContentTypeParser('text/plain');
    api.addHook('preValidation', stringFieldsOnly);
    api.addHook('onResponse', async (request) => {
      if (request.method !== 'GET') fleet.poke();
    });
    await api.register(sessionsRoutes, { sessions, publicUrl, connections: () => proxy.sessionStats() });
    await api.register(bladesRoutes, { blades, sessions, networks: new BladeNetworks(config.bladeNetworks) });
    await api.register(legacyRoute, { sessions });
    await api.register(eventsRoute, { fleet, maxStreams: config.maxEventStreams, heartbeatMs: config.eventsHeartbeatMs });
    api.get('/api/v1/openapi.json', {
      config: { role: 'read' },
      schema: {
        operationId: 'openapi',
        summary: 'This OpenAPI document',
        tags: ['operations'],
        response: { 200: { type: 'object', additionalProperties: true }, ...authErrors },
      },
    }, async () => app.swagger());
  });
  await registerWeb(app, { store, tokens, log, config });

  await blades.init();
  reconciler.start();
  const prune = (): void => {
    tokens.prune().catch((err: unknown) => log.warn({ err, module: 'tokens' }, 'could not prune tokens'));
    const before = new Date(Date.now() - config.sessionRetentionHours * 3_600_000);
    store.pruneEndedSessions(before).then(
      (n) => n > 0 && log.info({ module: 'sessions', pruned: n, before }, 'deleted ended sessions past their retention'),
      (err: unknown) => log.warn({ err, module: 'sessions' }, 'could not prune ended sessions'),
    );
  };
  const pruner = setInterval(prune, config.pruneIntervalMs).unref();
  prune();

  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      clearInterval(pruner);
      fleet.close();
      reconciler.stop();
      await proxy.close().catch((err: unknown) => log.warn({ err }, 'proxy close failed'));
      await app.close();
      blades.close();
    })();
    return closed;
  };

  return { app, proxy, blades, connections, sessions, reconciler, tokens, metrics, fleet, publicUrl, close };
}
