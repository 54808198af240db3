import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONTROLLER_NODE_FLAGS } from '../../controller/proxy/node-flags.js';

describe('controller node flags', () => {
  it('are in the shebang of vncdispatch-controller, so the systemd unit runs with them', () => {
    const first = readFileSync('controller/main.ts', 'utf8').split('\n')[0];
    expect(first).toBe(`#!/usr/bin/env -S node ${CONTROLLER_NODE_FLAGS.join(' ')}`);
  });

  it('are accepted by this node and give the proxy a 16 MiB young generation', () => {
    const r = spawnSync(process.execPath, [...CONTROLLER_NODE_FLAGS, '-e',
      "process.stdout.write(String(require('v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size))"], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(Number(r.stdout)).toBe(16 * 1024 * 1024);
  });
});
