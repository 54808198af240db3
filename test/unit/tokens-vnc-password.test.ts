/** The per-session VNC password (README, Security: threat 3): crypto.randomInt, exactly 8 characters of a fixed alphabet. */
import { describe, expect, it } from 'vitest';
import { VNC_PASSWORD_ALPHABET, newVncPassword } from '../../controller/tokens/vnc-password.js';

describe('newVncPassword', () => {
  it('is exactly 8 characters, all from the alphabet', () => {
    expect(VNC_PASSWORD_ALPHABET).toMatch(/^[\x21-\x7e]+$/);
    for (let i = 0; i < 500; i++) {
      const p = newVncPassword();
      expect(p).toHaveLength(8);
      for (const c of p) expect(VNC_PASSWORD_ALPHABET).toContain(c);
    }
  });

  it('uses the whole alphabet and does not repeat itself', () => {
    const passwords = Array.from({ length: 2000 }, newVncPassword);
    expect(new Set(passwords).size).toBe(passwords.length);
    // 16000 draws over 62 symbols: about 258 each; a symbol never drawn (or a skewed draw) means broken sampling.
    const counts = new Map<string, number>();
    for (const c of passwords.join('')) counts.set(c, (counts.get(c) ?? 0) + 1);
    expect(counts.size).toBe(VNC_PASSWORD_ALPHABET.length);
    for (const n of counts.values()) {
      expect(n).toBeGreaterThan(150);
      expect(n).toBeLessThan(380);
    }
  });
});
