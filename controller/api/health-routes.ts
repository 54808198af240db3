/** Unauthenticated operational routes: liveness, readiness and Prometheus metrics. */
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { BladeRegistry } from '../blades/registry.js';
import type { Store } from '../store/store.js';
import { WriteProbe } from './write-probe.js';

export interface HealthRouteDeps {
  store: Store;
  blades: BladeRegistry;
  registry: Registry;
  /** How long a /readyz store-write check stays good for later callers. */
  readyCheckTtlMs: number;
}

const readySchema = {
  type: 'object',
  required: ['ready', 'store', 'bladesUp'],
  properties: {
    ready: { type: 'boolean' },
    store: { type: 'boolean' },
    bladesUp: { type: 'integer' },
    reason: { type: 'string' },
  },
} as const;

export async function healthRoutes(app: FastifyInstance, deps: HealthRouteDeps): Promise<void> {
  const writeProbe = new WriteProbe(() => deps.store.checkWritable(), deps.readyCheckTtlMs);
  app.get('/healthz', {
    schema: {
      operationId: 'liveness',
      summary: 'Liveness: the process answers',
      tags: ['operations'],
      security: [],
      response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } },
    },
  }, async () => ({ ok: true }));

  app.get('/readyz', {
    schema: {
      operationId: 'readiness',
      summary: 'Readiness: the store can record a change now and at least one blade is UP',
      tags: ['operations'],
      security: [],
      response: { 200: readySchema, 503: readySchema },
    },
  }, async (_request, reply) => {
    // A write, not a read: a full or read-only disk, or a deleted database file, still reads fine.
    let storeError: string | null = null;
    try {
      await writeProbe.run();
    } catch (err) {
      storeError = err instanceof Error ? err.message : String(err);
    }
    const store = storeError === null;
    const bladesUp = deps.blades.list().filter((b) => b.state === 'UP').length;
    const ready = store && bladesUp > 0;
    const reason = !store ? `the store cannot record changes: ${storeError}` : bladesUp === 0 ? 'no blade is UP' : undefined;
    return reply.code(ready ? 200 : 503).send({ ready, store, bladesUp, ...(reason && { reason }) });
  });

  app.get('/metrics', {
    schema: {
      operationId: 'metrics',
      summary: 'Prometheus metrics',
      tags: ['operations'],
      security: [],
      produces: ['text/plain'],
      response: { 200: { type: 'string' } },
    },
  }, async (_request, reply) => {
    const body = await deps.registry.metrics();
    return reply.type(deps.registry.contentType).send(body);
  });
}
