/**
 * The package's bins (package.json "bin") are what operators run and what systemd starts: each must be built,
 * executable through its shebang (README links them into /usr/local/bin), and answer --help with its usage.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { bin: Record<string, string> };

describe('bins', () => {
  it.each(Object.entries(pkg.bin))('%s (%s) is executable and prints its usage', (name, path) => {
    const file = `${root}${path}`;
    expect(() => accessSync(file, constants.X_OK)).not.toThrow();
    const r = spawnSync(file, ['--help'], { encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toContain(name === 'vncdispatch' ? 'vncdispatch up' : `usage: ${name}`);
  });
});
