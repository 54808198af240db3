import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const UNIT = 'systemd/vncdispatch-controller.service';
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

describe('systemd/vncdispatch-controller.service', () => {
  it.skipIf(!hasAnalyze)('passes systemd-analyze verify (skipped when systemd-analyze is not installed)', () => {
    const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('runs as its own unprivileged user with strong hardening, and leaves W^X off for the Node JIT', () => {
    const unit = readFileSync(UNIT, 'utf8');
    const settings = new Set(unit.split('\n').filter((l) => /^[A-Z]\w+=/.test(l)).map((l) => l.trim()));
    for (const s of ['DynamicUser=yes', 'NoNewPrivileges=yes', 'CapabilityBoundingSet=', 'ProtectSystem=strict',
      'ProtectHome=yes', 'PrivateTmp=yes', 'PrivateDevices=yes', 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
      'SystemCallFilter=@system-service', 'StateDirectory=vncdispatch', 'MemoryDenyWriteExecute=no']) {
      expect(settings).toContain(s);
    }
    expect(unit).not.toMatch(/^User=root/m);
  });
});
