/**
 * The CLI's connection to a controller: where it is and which API key to send, parsed once from flags and the
 * environment, and one `call()` that turns every failure into a CliError with the exit code scripts can rely on.
 *
 * The key comes from `--api-key-file FILE`, else `$VNCDISPATCH_API_KEY_FILE`, else `$VNCDISPATCH_API_KEY`; never from
 * a flag's value, which any local user could read in `ps`.
 */
import { readFileSync } from 'node:fs';

/** Exit codes of the operator commands (documented in README.md). */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  auth: 4,
  refused: 5,
  unavailable: 6,
} as const;

export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(message: string, readonly exitCode: number, readonly code: string | null = null) {
    super(message);
  }
}

export interface ClientOptions {
  url: string;
  apiKey: string;
  timeoutMs: number;
}

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** Reads the controller URL and API key from flags and the environment. */
export function clientOptions(flags: { url?: string; 'api-key-file'?: string; timeout?: string }, env: NodeJS.ProcessEnv): ClientOptions {
  const url = (flags.url ?? env.VNCDISPATCH_URL ?? DEFAULT_URL).replace(/\/+$/, '');
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    throw new CliError(`--url must be an http(s) URL, got ${JSON.stringify(url)}`, EXIT.usage);
  }
  const file = flags['api-key-file'] ?? env.VNCDISPATCH_API_KEY_FILE;
  let apiKey: string | undefined;
  if (file) {
    try {
      apiKey = readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
    } catch (err) {
      throw new CliError(`cannot read the API key file ${file}: ${(err as Error).message}`, EXIT.usage);
    }
    // A keys file of the controller ("ROLE KEY" lines) works too: take the key.
    if (apiKey && /\s/.test(apiKey)) apiKey = apiKey.split(/\s+/)[1];
    if (!apiKey) throw new CliError(`the API key file ${file} holds no key`, EXIT.usage);
  } else {
    apiKey = env.VNCDISPATCH_API_KEY?.trim();
  }
  if (!apiKey) {
    throw new CliError('no API key: pass --api-key-file FILE or set VNCDISPATCH_API_KEY_FILE or VNCDISPATCH_API_KEY', EXIT.usage);
  }
  const timeoutMs = flags.timeout === undefined ? 30_000 : Number(flags.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new CliError('--timeout must be a number of seconds', EXIT.usage);
  return { url, apiKey, timeoutMs };
}

function exitFor(status: number): number {
  if (status === 404) return EXIT.notFound;
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 429 || status >= 500) return EXIT.unavailable;
  return EXIT.refused;
}

/** One REST call; resolves with the JSON body or throws CliError. `auth: false` sends no key (health routes). */
export async function call<T = unknown>(o: ClientOptions, method: string, path: string, body?: unknown,
  { auth = true, okStatuses = [] as number[] } = {}): Promise<{ status: number; body: T }> {
  let res: Response;
  try {
    res = await fetch(`${o.url}${path}`, {
      method,
      headers: {
        ...(auth && { authorization: `Bearer ${o.apiKey}` }),
        ...(body !== undefined && { 'content-type': 'application/json' }),
        accept: 'application/json',
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(o.timeoutMs),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = (err as Error).name === 'TimeoutError' ? `no answer within ${o.timeoutMs / 1000} s`
      : cause?.code ?? cause?.message ?? (err as Error).message;
    throw new CliError(`cannot reach the controller at ${o.url}: ${why}`, EXIT.unavailable);
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (res.ok || okStatuses.includes(res.status)) return { status: res.status, body: parsed as T };
  const error = (parsed as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof error?.code === 'string' ? error.code : null;
  const message = typeof error?.message === 'string' ? error.message : `HTTP ${res.status}`;
  throw new CliError(code ? `${code}: ${message}` : message, exitFor(res.status), code);
}
