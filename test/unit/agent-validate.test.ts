/** Input checks that run before any lookup: which names, passwords and sizes get through. */
import { describe, expect, it } from 'vitest';
import { AgentError } from '../../agent/errors.js';
import { checkDepth, checkGeometry, checkPassword, checkUsername } from '../../agent/users/validate.js';

function code(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as AgentError).code;
  }
}

describe('checkUsername', () => {
  it.each(['alice', 'vdtest01', '_svc', 'a-b_c', 'a'.repeat(32)])('accepts %j', (name) => {
    expect(code(() => checkUsername(name))).toBeUndefined();
  });

  it.each(['', 'a;id', '$(id)', '-c', '../x', 'a/b', 'Alice', '1abc', 'a b', 'a\nb', 'a'.repeat(33), 'a'.repeat(10_240),
    'é', 'a\0b', '.hidden'])('refuses %j', (name) => {
    expect(code(() => checkUsername(name))).toBe('VD_AGENT_INVALID_USERNAME');
  });

  it('keeps the message short for a huge name', () => {
    try {
      checkUsername('x'.repeat(10_240) + ';');
    } catch (err) {
      expect((err as Error).message.length).toBeLessThan(200);
    }
  });
});

describe('checkPassword', () => {
  it.each(['a', 'abcdefgh', '!~"#$%&\''])('accepts %j', (pw) => expect(code(() => checkPassword(pw))).toBeUndefined());
  it.each(['', 'abcdefghi', 'a b', 'tab\t', 'é', 'a\0'])('refuses %j', (pw) => {
    expect(code(() => checkPassword(pw))).toBe('VD_AGENT_INVALID_PASSWORD');
  });
});

describe('checkGeometry and checkDepth', () => {
  it.each(['1280x800', '320x200', '8192x8192', '1920x1080'])('accepts %s', (g) => {
    expect(code(() => checkGeometry(g))).toBeUndefined();
  });
  it.each(['', '1280', '1280x', '100x100', '9000x1000', '1280x800 ', '1280x800;id', '-1x5', '0x0'])('refuses %j', (g) => {
    expect(code(() => checkGeometry(g))).toBe('VD_AGENT_INVALID_GEOMETRY');
  });
  it('allows only depths 16, 24 and 32', () => {
    for (const d of [16, 24, 32]) expect(code(() => checkDepth(d))).toBeUndefined();
    for (const d of [0, 8, 15, 30, 64]) expect(code(() => checkDepth(d))).toBe('VD_AGENT_INVALID_DEPTH');
  });
});
