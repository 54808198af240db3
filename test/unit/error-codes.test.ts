/**
 * Error codes are part of the API. Both directions are checked: every controller error class is documented in
 * README.md with the HTTP status the controller really answers, and every documented VD_ERR_ code is a class; every
 * class is produced somewhere in the controller's code and its code is expected by some test. Agent codes must be
 * documented too.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentErrorCodes } from '../../agent/errors.js';
import { ERROR_CLASSES } from '../../controller/errors.js';

const root = new URL('../../', import.meta.url).pathname;
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

const controllerCode = sources(join(root, 'controller'))
  .filter((p) => !p.endsWith('/errors.ts'))
  .map((p) => readFileSync(p, 'utf8'))
  .join('\n');
const testCode = sources(join(root, 'test'))
  .filter((p) => !p.endsWith('error-codes.test.ts'))
  .map((p) => readFileSync(p, 'utf8'))
  .join('\n');
const documented = new Map(
  [...readme.matchAll(/^\| `(VD_ERR_\w+)` \| (\d{3}) \|/gm)].map((m) => [m[1]!, Number(m[2])]),
);

describe('error codes', () => {
  it.each(ERROR_CLASSES.map((c) => [c.code, c] as const))('%s is documented in the README with its HTTP status', (code, cls) => {
    expect(documented.get(code), `README.md has no table row | \`${code}\` | ${cls.statusCode} |`).toBe(cls.statusCode);
  });

  it('every documented VD_ERR_ code is a controller error class', () => {
    const classes = new Set<string>(ERROR_CLASSES.map((c) => c.code));
    expect([...documented.keys()].filter((code) => !classes.has(code))).toEqual([]);
  });

  it.each(ERROR_CLASSES.map((c) => [c.name, c] as const))('%s is produced by the controller and expected by a test', (name, cls) => {
    // Produced: constructed, or named in a mapping that constructs it (controller/error-reply.ts).
    expect(controllerCode, `nothing in controller/ produces ${name}`).toMatch(new RegExp(`\\b${name}\\b`));
    expect(testCode.includes(cls.code) || new RegExp(`\\b${name}\\b`).test(testCode), `no test expects ${cls.code}`).toBe(true);
  });

  it('class names are real, so logs name the error type', () => {
    for (const cls of ERROR_CLASSES) expect(new cls().name).toBe(cls.name);
  });

  it.each(Object.keys(AgentErrorCodes))('agent %s appears in the README', (code) => {
    expect(readme).toContain(`\`${code}\``);
  });
});
