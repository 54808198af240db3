/**
 * Prometheus metrics for the controller, in a registry of its own (never prom-client's global one, so tests can
 * build several apps in one process). The proxy registers its own metrics in the same registry.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  sessionStarts: Counter<'blade' | 'result'>;
  sessionStartSeconds: Histogram<'result'>;
  sessionsEnded: Counter<'reason'>;
  bladeUp: Gauge<'blade'>;
  bladeLiveSessions: Gauge<'blade'>;
  unknownSessions: Gauge<'blade'>;
  agentCalls: Counter<'method' | 'result'>;
  httpRequests: Counter<'method' | 'route' | 'status'>;
}

/** Creates the registry and the controller's metrics. `defaults` adds process metrics (off in unit tests). */
export function createMetrics(options: { defaults?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaults ?? true) collectDefaultMetrics({ register: registry, prefix: 'vncdispatch_controller_' });
  const registers = [registry];
  return {
    registry,
    sessionStarts: new Counter({
      name: 'vncdispatch_session_starts_total',
      help: 'StartSession attempts by blade and result (ok, existing, rejected, unavailable).',
      labelNames: ['blade', 'result'],
      registers,
    }),
    sessionStartSeconds: new Histogram({
      name: 'vncdispatch_session_start_seconds',
      help: 'Time from POST /api/v1/sessions to an answer, by result.',
      labelNames: ['result'],
      buckets: [0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10],
      registers,
    }),
    sessionsEnded: new Counter({
      name: 'vncdispatch_sessions_ended_total',
      help: 'Sessions ended, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    bladeUp: new Gauge({ name: 'vncdispatch_blade_up', help: '1 if the blade answers health checks.', labelNames: ['blade'], registers }),
    bladeLiveSessions: new Gauge({
      name: 'vncdispatch_blade_live_sessions',
      help: 'Live sessions the blade reports.',
      labelNames: ['blade'],
      registers,
    }),
    unknownSessions: new Gauge({
      name: 'vncdispatch_blade_unknown_sessions',
      help: 'Sessions a blade runs that the store does not know (found by reconciliation).',
      labelNames: ['blade'],
      registers,
    }),
    agentCalls: new Counter({
      name: 'vncdispatch_agent_calls_total',
      help: 'gRPC calls to agents by method and result (ok or the gRPC status name).',
      labelNames: ['method', 'result'],
      registers,
    }),
    httpRequests: new Counter({
      name: 'vncdispatch_http_requests_total',
      help: 'REST requests by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers,
    }),
  };
}
