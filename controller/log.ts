/**
 * The controller's one root logger (pino JSON). Modules take `log.child({ module })`. Secrets are removed here,
 * centrally, so a careless `log.info({ session })` cannot leak a password, token or API key.
 */
import { hostname } from 'node:os';
import { pino, type Logger } from 'pino';
import type { Config } from './config.js';

export type { Logger } from 'pino';

/** Paths pino removes from every line. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'authorization',
  'password',
  'token',
  'reconnectKey',
  'apiKey',
  '*.password',
  '*.token',
  '*.reconnectKey',
  '*.apiKey',
  '*.*.password',
];

/** Strips `token=` / `key=` query values from a URL before it reaches a log line. */
export function scrubUrl(url: string): string {
  return url.replace(/([?&](?:token|key)=)[^&#]*/gi, '$1[Redacted]');
}

/** Creates the root logger. `destination` defaults to stdout (tests may pass a stream). */
export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level: config.logLevel,
      // Service, host and process on every line: several controllers' logs meet in one place, and a restart is a
      // new pid.
      base: { service: 'vncdispatch-controller', hostname: hostname(), pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
      serializers: {
        err: pino.stdSerializers.err,
        req: (req: { method?: string; url?: string; ip?: string; id?: string }) => ({
          id: req.id,
          method: req.method,
          url: req.url ? scrubUrl(req.url) : req.url,
          ip: req.ip,
        }),
      },
    },
    destination,
  );
}
