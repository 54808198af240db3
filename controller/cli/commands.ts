/**
 * The operator commands of `vncdispatch`: status, sessions and blades, against a controller's REST API. Each
 * returns its exit code and writes a table for people or, with --json, the API's JSON for scripts.
 */
import { parseArgs } from 'node:util';
import { call, CliError, clientOptions, EXIT, type ClientOptions } from './client.js';
import { bytes, fields, json, since, table, withProgress } from './output.js';

export const OPS_USAGE = `operator commands (talk to a controller's REST API):
  vncdispatch status                          controller readiness, blades up, sessions and free capacity
  vncdispatch sessions list [--state live|ended|all] [--blade NAME] [--user NAME] [--limit N]
  vncdispatch sessions show ID
  vncdispatch sessions start USER [--client-ip IP]
  vncdispatch sessions stop ID
  vncdispatch blades list
  vncdispatch blades add NAME HOST:PORT
  vncdispatch blades remove NAME [--force]    --force also ends the blade's live sessions
  vncdispatch blades cordon|uncordon NAME
  vncdispatch blades drain NAME [--wait]      --wait returns once the blade has no sessions left
common flags:
  --url URL              the controller (default $VNCDISPATCH_URL, else http://127.0.0.1:8080)
  --api-key-file FILE    file holding the API key (default $VNCDISPATCH_API_KEY_FILE, else $VNCDISPATCH_API_KEY)
  --json                 print JSON for scripts instead of tables
  --timeout SECONDS      per request (default 30)
exit codes: 0 done, 1 unexpected failure, 2 usage, 3 not found, 4 key refused or role too weak,
  5 request refused (bad input, conflict), 6 controller or blades unavailable (also: status when not ready)
`;

const COMMON = {
  url: { type: 'string' },
  'api-key-file': { type: 'string' },
  json: { type: 'boolean', default: false },
  timeout: { type: 'string' },
} as const;

interface Out {
  write(text: string): void;
}

type Flags = Record<string, string | boolean | undefined>;

function parse(argv: string[], extra: Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>, positionals: number) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...COMMON, ...extra }, strict: true, allowPositionals: true });
  } catch (err) {
    throw new CliError((err as Error).message, EXIT.usage);
  }
  if (parsed.positionals.length !== positionals) {
    throw new CliError(`expected ${positionals} argument${positionals === 1 ? '' : 's'}, got ${parsed.positionals.length}`, EXIT.usage);
  }
  return { flags: parsed.values as Flags, args: parsed.positionals };
}

function client(flags: Flags, env: NodeJS.ProcessEnv): ClientOptions {
  return clientOptions(flags, env);
}

interface Blade {
  name: string;
  address: string;
  state: string;
  adminState?: string;
  sessions: number;
  capacity: number;
  load: { load1: number } | null;
  memory: { totalBytes: number; availableBytes: number } | null;
  hostname: string | null;
  version: string | null;
  lastSeen: string | null;
  lastError: string | null;
}

interface Session {
  id: string;
  username: string;
  blade: string | null;
  display: number | null;
  state: string;
  clientIp: string | null;
  createdAt: string;
  endedAt: string | null;
  endReason: string | null;
  viewers?: number;
  bytesDown?: number;
  bytesUp?: number;
  viewerIps?: string[];
}

function bladeRows(blades: Blade[]): string {
  return table(['NAME', 'STATE', 'SESSIONS', 'LOAD', 'MEMORY-FREE', 'LAST-SEEN', 'VERSION', 'ADDRESS', 'LAST-ERROR'],
    blades.map((b) => [b.name, b.state, `${b.sessions}/${b.capacity}`, b.load ? b.load.load1.toFixed(2) : null,
      b.memory ? bytes(b.memory.availableBytes) : null, since(b.lastSeen), b.version, b.address, b.lastError]));
}

function sessionFields(s: Session): string {
  return fields([
    ['id', s.id], ['user', s.username], ['blade', s.blade], ['display', s.display], ['state', s.state],
    ['created', s.createdAt], ['age', since(s.createdAt)], ['ended', s.endedAt], ['end reason', s.endReason],
    ['client IP', s.clientIp], ['viewers', s.viewers ?? 0], ['bytes down', bytes(s.bytesDown ?? 0)],
    ['bytes up', bytes(s.bytesUp ?? 0)], ['viewer IPs', (s.viewerIps ?? []).join(', ')],
  ]);
}

async function status(argv: string[], env: NodeJS.ProcessEnv, out: Out): Promise<number> {
  const { flags } = parse(argv, {}, 0);
  const o = client(flags, env);
  const [ready, blades, sessions] = await Promise.all([
    call<{ ready: boolean; reason?: string }>(o, 'GET', '/readyz', undefined, { auth: false, okStatuses: [503] }),
    call<{ blades: Blade[] }>(o, 'GET', '/api/v1/blades'),
    call<{ sessions: Session[]; nextOffset: number | null }>(o, 'GET', '/api/v1/sessions?state=live&limit=1000'),
  ]);
  const list = blades.body.blades;
  const up = list.filter((b) => b.state === 'UP');
  const summary = {
    url: o.url,
    ready: ready.body?.ready === true,
    reason: ready.body?.reason ?? null,
    blades: { total: list.length, up: up.length, down: list.filter((b) => b.state === 'DOWN').length,
      cordoned: list.filter((b) => b.state === 'CORDONED').length, draining: list.filter((b) => b.state === 'DRAINING').length },
    sessions: { live: sessions.body.sessions.length, more: sessions.body.nextOffset !== null },
    capacity: { total: up.reduce((n, b) => n + b.capacity, 0), free: up.reduce((n, b) => n + Math.max(0, b.capacity - b.sessions), 0) },
  };
  if (flags.json) out.write(json(summary));
  else {
    out.write(fields([
      ['controller', o.url],
      ['ready', summary.ready ? 'yes' : `no (${summary.reason ?? 'not ready'})`],
      ['blades', `${summary.blades.up} up of ${summary.blades.total} (${summary.blades.down} down, ${summary.blades.cordoned} cordoned, ${summary.blades.draining} draining)`],
      ['live sessions', `${summary.sessions.live}${summary.sessions.more ? '+' : ''}`],
      ['free capacity', `${summary.capacity.free} of ${summary.capacity.total} on UP blades`],
    ]));
  }
  return summary.ready ? EXIT.ok : EXIT.unavailable;
}

async function sessions(argv: string[], env: NodeJS.ProcessEnv, out: Out): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'list') {
    const { flags } = parse(rest, { state: { type: 'string', default: 'live' }, blade: { type: 'string' },
      user: { type: 'string' }, limit: { type: 'string', default: '100' } }, 0);
    const q = new URLSearchParams({ state: String(flags.state), limit: String(flags.limit) });
    if (flags.blade) q.set('blade', String(flags.blade));
    if (flags.user) q.set('user', String(flags.user));
    const { body } = await call<{ sessions: Session[]; nextOffset: number | null }>(client(flags, env), 'GET', `/api/v1/sessions?${q}`);
    if (flags.json) out.write(json(body));
    else {
      out.write(table(['ID', 'USER', 'BLADE', 'STATE', 'AGE', 'VIEWERS', 'DOWN', 'UP', 'END-REASON'],
        body.sessions.map((s) => [s.id, s.username, s.blade, s.state, since(s.createdAt), s.viewers ?? 0,
          bytes(s.bytesDown ?? 0), bytes(s.bytesUp ?? 0), s.endReason])));
    }
    return EXIT.ok;
  }
  if (sub === 'show' || sub === 'stop') {
    const { flags, args } = parse(rest, {}, 1);
    const o = client(flags, env);
    const path = `/api/v1/sessions/${encodeURIComponent(args[0]!)}`;
    const { body } = sub === 'show' ? await call<Session>(o, 'GET', path)
      : await withProgress(`ending session ${args[0]}`, call<Session>(o, 'DELETE', path));
    out.write(flags.json ? json(body) : sub === 'stop' ? `ended session ${body.id} of ${body.username}\n` : sessionFields(body));
    return EXIT.ok;
  }
  if (sub === 'start') {
    const { flags, args } = parse(rest, { 'client-ip': { type: 'string' } }, 1);
    const o = client(flags, env);
    const payload = { username: args[0], ...(flags['client-ip'] ? { clientIp: flags['client-ip'] } : {}) };
    const { status: code, body } = await withProgress(`starting a desktop for ${args[0]}`,
      call<Session & { viewerUrl: string; tokenExpiresAt: string }>(o, 'POST', '/api/v1/sessions', payload));
    if (flags.json) out.write(json(body));
    else {
      out.write(`${code === 201 ? 'started' : 'already running:'} session ${body.id} for ${body.username} on ${body.blade}\n`
        + `viewer: ${body.viewerUrl}\n(the link's token works until ${body.tokenExpiresAt})\n`);
    }
    return EXIT.ok;
  }
  throw new CliError(`unknown command: sessions ${sub ?? ''}`.trim(), EXIT.usage);
}

async function blades(argv: string[], env: NodeJS.ProcessEnv, out: Out): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'list') {
    const { flags } = parse(rest, {}, 0);
    const { body } = await call<{ blades: Blade[] }>(client(flags, env), 'GET', '/api/v1/blades');
    out.write(flags.json ? json(body) : bladeRows(body.blades));
    return EXIT.ok;
  }
  if (sub === 'add') {
    const { flags, args } = parse(rest, {}, 2);
    const { status: code, body } = await call<Blade>(client(flags, env), 'POST', '/api/v1/blades', { name: args[0], address: args[1] });
    out.write(flags.json ? json(body) : `${code === 201 ? 'registered' : 'already registered:'} blade ${body.name} at ${body.address}\n`);
    return EXIT.ok;
  }
  if (sub === 'remove') {
    const { flags, args } = parse(rest, { force: { type: 'boolean', default: false } }, 1);
    const path = `/api/v1/blades/${encodeURIComponent(args[0]!)}${flags.force ? '?force=true' : ''}`;
    const { body } = await withProgress(`removing blade ${args[0]}`, call(client(flags, env), 'DELETE', path));
    out.write(flags.json ? json(body ?? { name: args[0], removed: true }) : `removed blade ${args[0]}\n`);
    return EXIT.ok;
  }
  if (sub === 'cordon' || sub === 'uncordon' || sub === 'drain') {
    const { flags, args } = parse(rest, sub === 'drain' ? { wait: { type: 'boolean', default: false } } : {}, 1);
    const o = client(flags, env);
    const path = `/api/v1/blades/${encodeURIComponent(args[0]!)}`;
    let { body } = await call<Blade>(o, 'POST', `${path}/${sub}`);
    if (sub === 'drain' && flags.wait) {
      body = await withProgress(`waiting for ${args[0]}'s sessions to end`, (async () => {
        for (;;) {
          const b = (await call<Blade>(o, 'GET', path)).body;
          if (b.sessions === 0) return b;
          await new Promise((r) => setTimeout(r, 1000));
        }
      })());
    }
    out.write(flags.json ? json(body) : `${sub === 'uncordon' ? 'uncordoned' : sub === 'drain' ? 'draining' : 'cordoned'} blade ${body.name}: state ${body.state}, ${body.sessions} sessions\n`);
    return EXIT.ok;
  }
  throw new CliError(`unknown command: blades ${sub ?? ''}`.trim(), EXIT.usage);
}

/**
 * The operator commands by name. A Map, not an object literal: the name comes from argv, and an object would answer
 * `constructor` or `toString` with a function from Object.prototype.
 */
export const OPS_COMMANDS: ReadonlyMap<string, (argv: string[], env: NodeJS.ProcessEnv, out: Out) => Promise<number>> =
  new Map([['status', status], ['sessions', sessions], ['blades', blades]]);
