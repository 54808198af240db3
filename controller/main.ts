#!/usr/bin/env -S node --min-semi-space-size=16
/**
 * `vncdispatch-controller`: parses flags, opens the store, builds the app, listens, and shuts down gracefully on
 * SIGTERM/SIGINT (stop accepting, close connections, close the store). Exit 2 on bad flags.
 */
import type { AddressInfo } from 'node:net';
import { buildApp } from './app.js';
import { ConfigError, parseConfig, USAGE } from './config.js';
import { createLogger } from './log.js';
import { createStore } from './store/index.js';

async function main(argv: string[]): Promise<number> {
  let config;
  try {
    config = parseConfig(argv, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`vncdispatch-controller: ${err.message}\n${USAGE}`);
    return 2;
  }
  if (!config) {
    process.stdout.write(USAGE);
    return 0;
  }
  const log = createLogger(config);
  for (const warning of config.warnings) log.warn(warning);
  if (config.insecureAgents) log.warn('--insecure-agents: gRPC to the agents is NOT encrypted or authenticated; local development only');
  const store = createStore(config.mongodbUrl ? { mongodbUrl: config.mongodbUrl } : { dataDir: config.dataDir,
    synchronous: config.sqliteSynchronous });
  await store.init();
  const controller = await buildApp({ config, store, log });
  await controller.app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = controller.app.server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  // Always written, whatever --log-level: supervisors and `vncdispatch up` wait for this line.
  log.child({}, { level: 'info' }).info({ address: `${host}:${addr.port}`, publicUrl: controller.publicUrl(), blades: config.blades.map((b) => b.name),
    store: config.mongodbUrl ? 'mongodb' : 'sqlite', placement: config.placement }, 'listening');

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  const force = setTimeout(() => {
    log.error('shutdown took too long; exiting');
    process.exit(1);
  }, config.shutdownGraceMs).unref();
  await controller.close();
  await store.close();
  clearTimeout(force);
  log.info('stopped');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vncdispatch-controller: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
