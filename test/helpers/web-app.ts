/**
 * The controller's browser-facing pages alone (registerWeb: noVNC, viewer, dashboard, POST /viewer/reconnect) on a
 * real fastify listening on 127.0.0.1:0, with a real in-memory SqliteStore and TokenService behind them.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { SqliteStore } from '../../controller/store/sqlite-store.js';
import { TokenService } from '../../controller/tokens/token-service.js';
import { registerWeb } from '../../controller/web/index.js';

export interface WebApp {
  app: FastifyInstance;
  store: SqliteStore;
  port: number;
  close(): Promise<void>;
}

export async function startWebApp(): Promise<WebApp> {
  const store = new SqliteStore({ filename: ':memory:' });
  await store.init();
  const app = Fastify();
  await registerWeb(app, { store, tokens: new TokenService(store), log: pino({ level: 'silent' }), config: {} });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    app,
    store,
    port: address.port,
    close: async () => {
      await app.close();
      await store.close();
    },
  };
}
