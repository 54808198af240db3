/** The shipped unit passes `systemd-analyze verify` and keeps desktops alive across agent restarts. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const UNIT = fileURLToPath(new URL('../../systemd/vncdispatch-agent.service', import.meta.url));
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

function directives(): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(UNIT, 'utf8').split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (kv) m.set(kv[1]!, kv[2]!);
  }
  return m;
}

describe('systemd/vncdispatch-agent.service', () => {
  it.skipIf(!hasAnalyze)('passes systemd-analyze verify (skipped when systemd-analyze is not installed)', () => {
    const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('runs as root, restarts on failure, and does not kill desktops when the agent restarts', () => {
    const d = directives();
    expect(d.get('User')).toBe('root');
    expect(d.get('Restart')).toBe('on-failure');
    expect(d.get('KillMode')).toBe('process');
    expect(d.get('StateDirectory')).toBe('vncdispatch-agent');
    expect(d.get('ExecStart')).toContain('--state-dir ${STATE_DIRECTORY}');
    // These would break desktops, which inherit the agent's sandbox.
    for (const k of ['NoNewPrivileges', 'PrivateTmp', 'ProtectHome', 'ProtectSystem']) expect(d.has(k)).toBe(false);
  });
});
