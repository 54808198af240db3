#!/usr/bin/env node
/**
 * vncdispatch-agent: the blade daemon. Parses flags, re-adopts sessions, serves gRPC, and on SIGTERM/SIGINT stops
 * accepting calls and exits without touching running desktops.
 */
import { hostname as osHostname } from 'node:os';
import { ConfigError, parseConfig, USAGE, type AgentConfig } from './config.js';
import { buildServer, reportShuttingDown } from './grpc/server.js';
import { listenAgentPort } from './listener.js';
import { createLogger } from './logger.js';
import { createAgentMetrics, serveMetrics, type AgentMetrics } from './metrics.js';
import { agentVersion } from './paths.js';
import { DesktopRelay } from './relay/desktop-relay.js';
import { SessionManager } from './sessions/manager.js';
import { SessionStore } from './sessions/store.js';
import { raiseOwnPriority } from './priority.js';
import { HostStatusSampler } from './status.js';
import { ensureRuntimeBase } from './vnc/runtime-dir.js';
import { startSpawners } from './vnc/spawner.js';
import { ensureX11SocketDir } from './x11-socket-dir.js';

async function run(config: AgentConfig): Promise<void> {
  const log = createLogger(config.logLevel);
  if (process.geteuid?.() !== 0) {
    log.fatal('vncdispatch-agent must run as root: it starts desktops as other users');
    process.exit(1);
  }
  // Before any other thread or child exists, so they inherit the right priority (see priority.ts).
  const priority = raiseOwnPriority(config.agentNice);
  if (priority.group === 'shared' || priority.group === 'failed' || priority.error) {
    log.warn({ priority }, priority.group === 'shared'
      ? 'the agent shares its session (and its autogroup) with whatever started it, so under autogroup each desktop ' +
        'weighs as much as the agent and GetStatus may wait behind busy desktops; start it in its own session ' +
        '(systemd does; by hand, setsid vncdispatch-agent)'
      : 'could not raise the agent\'s CPU priority (--agent-nice); GetStatus may wait behind busy desktops');
  } else {
    log.info({ priority }, 'CPU priority');
  }
  if (config.insecure) {
    log.warn({ insecure: true }, 'INSECURE MODE: no TLS and no client authentication; anyone who can reach this ' +
      'port can start desktops as any allowed user and read and type into every desktop through the relay, in clear. ' +
      'Use only for local development.');
  }
  ensureX11SocketDir(log);
  startSpawners(config.spawners, priority.startedNice);
  await ensureRuntimeBase(config.runtimeDir);
  const hostname = osHostname();
  const store = await SessionStore.open(config.stateDir);
  let metrics: AgentMetrics | undefined;
  const sessions: SessionManager = new SessionManager({ config, store, log, hostname,
    onEnded: (how) => metrics?.ended.inc({ how }) });
  if (config.metricsListen) {
    metrics = createAgentMetrics(() => ({ sessions: sessions.liveCount(), capacity: sessions.capacity }));
    const m = await serveMetrics(metrics.registry, config.metricsListen.host, config.metricsListen.port);
    m.server.unref();
    log.info({ metricsAddress: m.address }, 'metrics listening');
  }
  await sessions.open();
  const host = new HostStatusSampler();
  host.start(config.reapIntervalMs);
  const { server, health } = buildServer({ sessions, log, hostname, version: agentVersion,
    hostStatus: () => host.current(), ...(metrics && { metrics }) });
  const relay = new DesktopRelay({ sessions, log, handshakeTimeoutMs: config.relayHandshakeTimeoutMs,
    maxQueuedBytes: config.relayMaxQueuedBytes });
  const agentPort = await listenAgentPort({ config, grpc: server, relay, log });
  const { address, port } = agentPort;
  log.info({ address, port, version: agentVersion, tls: !config.insecure, stateDir: config.stateDir,
    runtimeDir: config.runtimeDir, maxSessions: config.maxSessions }, 'listening');

  let shuttingDown = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal }, 'shutting down; desktops keep running');
    // Health watchers (the controllers) hear it first, so they stop placing desktops here at once.
    reportShuttingDown(health);
    sessions.close();
    host.stop();
    void agentPort.close();
    const force = setTimeout(() => server.forceShutdown(), config.shutdownGraceMs);
    force.unref();
    server.tryShutdown(() => {
      log.info('stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

let config: AgentConfig;
try {
  config = parseConfig(process.argv.slice(2));
} catch (err) {
  if (err instanceof ConfigError) {
    if (err.message) process.stderr.write(`vncdispatch-agent: ${err.message}\n`);
    process.stderr.write(USAGE);
    process.exit(err.message ? 2 : 0);
  }
  throw err;
}
run(config).catch((err: unknown) => {
  createLogger('info').fatal({ err }, 'agent failed');
  process.exit(1);
});
