/**
 * The generated gRPC code is committed (proto/gen). This fails when `npm run generate` would change it, so the
 * contract and the code that serves it never drift apart.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url).pathname;

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}

describe('generated proto code', () => {
  const out = mkdtempSync(join(tmpdir(), 'vncdispatch-gen-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('is exactly what `npm run generate` produces from proto/', () => {
    execFileSync(join(root, 'node_modules/.bin/buf'), ['generate', '--output', out], { cwd: root, stdio: 'pipe' });
    const fresh = join(out, 'proto/gen');
    const committed = join(root, 'proto/gen');
    expect(listFiles(committed)).toEqual(listFiles(fresh));
    for (const file of listFiles(fresh)) {
      expect(readFileSync(join(committed, file), 'utf8'), `proto/gen/${file} is stale: run npm run generate`).toBe(
        readFileSync(join(fresh, file), 'utf8'),
      );
    }
  });

  it('proto/descriptors.binpb (what agent reflection serves) is exactly what `buf build` produces from proto/', () => {
    const fresh = join(out, 'descriptors.binpb');
    execFileSync(join(root, 'node_modules/.bin/buf'), ['build', '-o', fresh], { cwd: root, stdio: 'pipe' });
    expect(readFileSync(join(root, 'proto/descriptors.binpb')).equals(readFileSync(fresh)),
      'proto/descriptors.binpb is stale: run npm run generate').toBe(true);
  });
});
