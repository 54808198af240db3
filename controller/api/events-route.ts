/**
 * GET /api/v1/events: server-sent events for the dashboard (and anyone else with a `read` key). The stream opens
 * with `snapshot` ({ blades, sessions }) and then carries `blade`, `blade-removed`, `session` and `session-ended`
 * events, each a full item as the REST API shows it, so a client applies them in order without re-fetching.
 * A comment line every `heartbeatMs` keeps proxies and idle timers from closing a quiet stream.
 */
import type { FastifyInstance } from 'fastify';
import { TooManyStreamsError } from '../errors.js';
import type { FleetEvent, FleetWatch } from '../events/fleet-watch.js';
import { authErrors } from './schemas.js';

export interface EventsRouteOptions {
  fleet: FleetWatch;
  /** Most streams open at once (each costs a recomputation share and a socket). */
  maxStreams: number;
  /** How often a quiet stream gets a comment line. */
  heartbeatMs: number;
}

function frame(event: string, data: unknown, id?: number): string {
  // JSON never contains a raw newline, so one data: line always holds the whole payload.
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export async function eventsRoute(app: FastifyInstance, options: EventsRouteOptions): Promise<void> {
  const { fleet, maxStreams, heartbeatMs } = options;
  let open = 0;

  app.get('/api/v1/events', {
    config: { role: 'read' },
    schema: {
      operationId: 'streamEvents',
      summary: 'Live changes to blades and sessions, as server-sent events',
      description: 'text/event-stream. First `snapshot` ({"blades": [Blade], "sessions": [Session]}), then `blade` '
        + '(Blade), `blade-removed` ({"name"}), `session` (Session) and `session-ended` (Session) as they happen.',
      tags: ['operations'],
      produces: ['text/event-stream'],
      response: {
        200: { description: 'An endless event stream.', type: 'string' },
        ...authErrors,
        429: { $ref: 'Error#' },
      },
    },
  }, async (request, reply) => {
    if (open >= maxStreams) throw new TooManyStreamsError();
    open++;
    let closed = false;
    let seq = 0;
    const pending: FleetEvent[] = [];
    let ready = false;
    const raw = reply.raw;
    const write = (text: string): void => {
      if (!closed) raw.write(text);
    };
    const onEvent = (e: FleetEvent): void => {
      if (!ready) pending.push(e);
      else write(frame(e.type, e.data, ++seq));
    };
    let unsubscribe = (): void => {};
    let heartbeat: NodeJS.Timeout | null = null;
    const cleanup = (): void => {
      if (closed) return;
      closed = true;
      open--;
      if (heartbeat) clearInterval(heartbeat);
      unsubscribe();
    };
    request.raw.once('close', cleanup);
    raw.once('close', cleanup);
    raw.once('error', cleanup);

    let snapshot;
    try {
      ({ snapshot, unsubscribe } = await fleet.subscribe(onEvent));
    } catch (err) {
      cleanup();
      throw err;
    }
    if (closed) {
      unsubscribe();
      return reply;
    }
    reply.hijack();
    raw.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string | string[]>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      // nginx and similar would otherwise buffer the stream.
      'x-accel-buffering': 'no',
    });
    write('retry: 2000\n\n');
    write(frame('snapshot', snapshot, ++seq));
    ready = true;
    for (const e of pending.splice(0)) write(frame(e.type, e.data, ++seq));
    heartbeat = setInterval(() => write(': keep-alive\n\n'), heartbeatMs);
    heartbeat.unref();
    return reply;
  });
}
