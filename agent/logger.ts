/** The agent's root logger: pino JSON on stdout (journald captures it under systemd). */
import { hostname } from 'node:os';
import { pino, type Logger } from 'pino';

/** Field paths redacted wherever they appear, as a second line of defence: passwords are never logged on purpose. */
const REDACT = ['password', '*.password', 'req.password', 'request.password'];

/** Every line names its service, host and process: a fleet's logs meet in one place, and a restart is a new pid. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'vncdispatch-agent', hostname: hostname(), pid: process.pid },
    redact: { paths: REDACT, censor: '[redacted]' } });
}
