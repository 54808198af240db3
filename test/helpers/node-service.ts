/**
 * Runs one of the project's built programs (dist/...) as a real process and resolves once it logs its pino
 * `"msg":"listening"` line, with the address it bound. Shared by the agent and controller test helpers.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repo root, whether this file runs from test/helpers or dist/test/helpers. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

export interface NodeService {
  /** HOST:PORT from the `listening` line. */
  address: string;
  port: number;
  pid: number;
  /** Every line so far (pino JSON on stdout, plus anything on stderr). */
  logs: string[];
  /** Sends `signal` (default SIGTERM) and waits for the process to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `node script ...args` and resolves once it logs `listening`; rejects if it exits or times out first.
 * `prefix` runs it under a command that execs it in place (e.g. `ip netns exec NS`), so `pid` is still node's.
 */
export function startNodeService(name: string, script: string, args: string[],
  opts: { env?: NodeJS.ProcessEnv | undefined; timeoutMs?: number | undefined; prefix?: readonly string[] | undefined } = {}):
  Promise<NodeService> {
  if (!existsSync(script)) throw new Error(`${script} missing: run npm run build first`);
  const [command, ...prefixArgs] = [...(opts.prefix ?? []), process.execPath];
  const child = spawn(command, [...prefixArgs, script, ...args], {
    env: opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => {
    exited = true;
    r();
  }));
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`${name} did not log "listening" in time; logs:\n${logs.join('\n')}`));
    }, opts.timeoutMs ?? 15_000);
    const onLine = (line: string) => {
      if (!line) return;
      logs.push(line);
      if (settled) return;
      let rec: { msg?: string; address?: string };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        return;
      }
      if (rec.msg === 'listening' && rec.address) {
        settled = true;
        clearTimeout(timer);
        resolve({
          address: rec.address, port: Number(rec.address.slice(rec.address.lastIndexOf(':') + 1)), pid: child.pid!, logs,
          stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
            if (!exited) child.kill(signal);
            await exit;
          },
        });
      }
    };
    for (const stream of [child.stdout, child.stderr]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          onLine(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    }
    child.once('exit', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${name} exited (${signal ?? code}) before listening; logs:\n${logs.join('\n')}`));
    });
  });
}
