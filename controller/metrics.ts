/**
 * Prometheus metrics for the controller, in a registry of its own (never prom-client's global one, so tests can
 * build several apps in one process). The proxy registers its own metrics in the same registry. Every name starts
 * with `vncdispatch_` (the agent's with `vncdispatch_agent_`), and the exposition passes `promtool check metrics`.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { SESSION_END_REASONS } from './store/store.js';

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
  /** Adds the per-blade gauges read from the registry at scrape time (so a removed blade's series go with it). */
  watchBlades(list: () => BladeSample[]): void;
}

/** What the per-blade gauges need of a blade. */
export interface BladeSample {
  name: string;
  adminState: string;
  capacity: number;
}

export const BLADE_ADMIN_STATES = ['ACTIVE', 'CORDONED', 'DRAINING'] as const;

/**
 * The `reason` labels of vncdispatch_sessions_ended_total, exported at 0 from the start so rate() and alerts see them
 * at once: every end reason a session record gets, and `user-rejected` for a start the blades refused for the user
 * (the row is discarded, so no record carries it).
 */
export const ENDED_METRIC_REASONS = [...SESSION_END_REASONS, 'user-rejected'] as const;

/**
 * prom-client's Node.js gauges named `*_total` (active handles, requests, resources): promtool refuses a gauge with
 * a counter's suffix, and nothing here needs them (the open-handles count is in process_open_fds).
 */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Creates the registry and the controller's metrics. `defaults` adds process metrics (off in unit tests). */
export function createMetrics(options: { defaults?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaults ?? true) {
    collectDefaultMetrics({ register: registry, prefix: 'vncdispatch_controller_' });
    for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(`vncdispatch_controller_${name}`);
  }
  const registers = [registry];
  const sessionsEnded = new Counter({
    name: 'vncdispatch_sessions_ended_total',
    help: 'Sessions ended, by reason.',
    labelNames: ['reason'],
    registers,
  });
  for (const reason of ENDED_METRIC_REASONS) sessionsEnded.inc({ reason }, 0);
  return {
    registry,
    watchBlades(list) {
      new Gauge({
        name: 'vncdispatch_blade_admin_state',
        help: "The operator's state of each blade: 1 for its current state (ACTIVE, CORDONED or DRAINING), else 0.",
        labelNames: ['blade', 'state'],
        registers,
        collect() {
          this.reset();
          for (const b of list()) for (const s of BLADE_ADMIN_STATES) this.set({ blade: b.name, state: s }, b.adminState === s ? 1 : 0);
        },
      });
      new Gauge({
        name: 'vncdispatch_blade_capacity',
        help: 'Most sessions the blade accepts (its agent --max-sessions; 0 until it has answered).',
        labelNames: ['blade'],
        registers,
        collect() {
          this.reset();
          for (const b of list()) this.set({ blade: b.name }, b.capacity);
        },
      });
    },
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
    sessionsEnded,
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
