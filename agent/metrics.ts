/**
 * The agent's Prometheus metrics, served over plain HTTP only when --metrics-listen is given (the gRPC port stays
 * mTLS-only; metrics reveal counts, never users or secrets). Names start with `vncdispatch_agent_`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface AgentMetrics {
  registry: Registry;
  /** Seconds from StartSession to a ready desktop (new desktops only), by result. */
  startSeconds: Histogram<'result'>;
  /** StartSession calls that did not give a desktop, by the agent's error code. */
  spawnFailures: Counter<'code'>;
  /** Desktops that ended: `stopped` by StopSession, `reaped` after exiting on their own. */
  ended: Counter<'how'>;
}

const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function createAgentMetrics(live: () => { sessions: number; capacity: number }): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'vncdispatch_agent_' });
  // promtool refuses gauges with a counter's `_total` suffix.
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(`vncdispatch_agent_${name}`);
  const registers = [registry];
  new Gauge({
    name: 'vncdispatch_agent_sessions',
    help: 'Desktops this agent runs now.',
    registers,
    collect() {
      this.set(live().sessions);
    },
  });
  new Gauge({
    name: 'vncdispatch_agent_capacity',
    help: 'Most desktops this agent runs (--max-sessions).',
    registers,
    collect() {
      this.set(live().capacity);
    },
  });
  const ended = new Counter({
    name: 'vncdispatch_agent_sessions_ended_total',
    help: 'Desktops that ended: how=stopped (StopSession) or how=reaped (exited on their own and cleaned up).',
    labelNames: ['how'],
    registers,
  });
  for (const how of ['stopped', 'reaped']) ended.inc({ how }, 0);
  return {
    registry,
    startSeconds: new Histogram({
      name: 'vncdispatch_agent_session_start_seconds',
      help: 'Time from StartSession to a ready desktop, by result (ok, existing, failed).',
      labelNames: ['result'],
      buckets: [0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15],
      registers,
    }),
    spawnFailures: new Counter({
      name: 'vncdispatch_agent_spawn_failures_total',
      help: 'StartSession calls that gave no desktop, by error code (VD_AGENT_...).',
      labelNames: ['code'],
      registers,
    }),
    ended,
  };
}

/** Serves GET /metrics on host:port; resolves with the bound address. Anything else is 404. */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<{ server: Server; address: string }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n'),
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return { server, address: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` };
}
