/**
 * Where `vncdispatch up` writes: every line of its own log and of its children's logs goes through one sink. On a
 * terminal the sink renders pino's JSON with pino-pretty (time, level, `[agent]`/`[controller]`/`[up]` and the
 * message, fields below); anywhere else (a pipe, a file, journald) it writes JSON lines, one object each, so the output
 * stays machine-readable: a child's line that is not JSON (a crash trace on stdout) is wrapped in one.
 */
import { pino, type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';

export interface UpOutput {
  /** True when lines are rendered for people. */
  readonly pretty: boolean;
  /** Writes one log line that came from `service` (`agent`, `controller`). */
  line(service: string, line: string): void;
  /** Text for people; written only when `pretty` (the same facts are in the log for machines). */
  text(text: string): void;
  /** `up`'s own logger, writing through the same sink. */
  readonly log: Logger;
}

const SERVICE_PREFIX = 'vncdispatch-';

/** Creates the sink. `pretty` defaults to whether `out` is a terminal. */
export function createUpOutput(out: NodeJS.WriteStream, pretty = out.isTTY === true): UpOutput {
  const render = pretty
    ? prettyFactory({
      colorize: true,
      ignore: 'pid,hostname,service',
      translateTime: 'HH:MM:ss.l',
      messageFormat: (log, messageKey) => {
        const service = typeof log.service === 'string' ? log.service.replace(SERVICE_PREFIX, '') : 'up';
        const msg = log[messageKey];
        return `[${service}] ${typeof msg === 'string' ? msg : JSON.stringify(msg ?? '')}`;
      },
    })
    : null;
  const write = (json: string): void => {
    out.write(render ? render(json) : json.endsWith('\n') ? json : `${json}\n`);
  };
  const log = pino({ base: { service: `${SERVICE_PREFIX}up` } }, { write });
  return {
    pretty,
    line(service, line) {
      if (!line.trim()) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = undefined;
      }
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) write(line);
      else write(JSON.stringify({ level: 30, time: Date.now(), service: `${SERVICE_PREFIX}${service}`, msg: line }));
    },
    text(text) {
      if (pretty) out.write(text);
    },
    log,
  };
}
