/** The agent's root logger: pino JSON on stdout (journald captures it under systemd). */
import { pino, type Logger } from 'pino';

/** Field paths redacted wherever they appear, as a second line of defence: passwords are never logged on purpose. */
const REDACT = ['password', '*.password', 'req.password', 'request.password'];

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'vncdispatch-agent' }, redact: { paths: REDACT, censor: '[redacted]' } });
}
