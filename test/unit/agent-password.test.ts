/** The password file and X cookie formats, checked against the real tools (vncpasswd, xauth). */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { xauthEntry } from '../../agent/vnc/runtime-dir.js';
import { obfuscateVncPassword, vncAuthResponse } from '../../shared/vnc-des.js';

const PASSWORDS = ['password', 'a', 'Kq3!x9Zp', '12345678', '~`"\'$;|&'];

describe('VNC password file', () => {
  it('matches the known vector: "password" -> dbd83cfd727a1458', () => {
    expect(obfuscateVncPassword('password').toString('hex')).toBe('dbd83cfd727a1458');
  });

  it.each(PASSWORDS)('is byte-for-byte what `vncpasswd -f` writes for %j', (pw) => {
    const real = execFileSync('vncpasswd', ['-f'], { input: `${pw}\n` });
    expect(obfuscateVncPassword(pw)).toEqual(real);
  });
});

describe('VNC authentication response', () => {
  it('is DES of the challenge under the bit-reversed password (RFB 3.8 section 7.2.2)', () => {
    const challenge = Buffer.alloc(16);
    const r = vncAuthResponse('password', challenge);
    expect(r.length).toBe(16);
    expect(r.subarray(0, 8)).toEqual(r.subarray(8, 16));
    expect(vncAuthResponse('passwore', challenge)).not.toEqual(r);
    // Only the first 8 bytes count, as in every VNC server.
    expect(vncAuthResponse('password-and-more', challenge)).toEqual(r);
  });
});

describe('X authority entry', () => {
  it('is read by xauth as one MIT-MAGIC-COOKIE-1 for any display', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vd-xauth-'));
    const file = join(dir, 'xauth');
    const cookie = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    writeFileSync(file, xauthEntry(cookie));
    const r = spawnSync('xauth', ['-f', file, 'nlist'], { encoding: 'utf8' });
    if (r.error) throw r.error;
    // nlist: family(hex) addrlen addr numlen num namelen name datalen data
    expect(r.stdout.trim()).toBe(`ffff 0000  0000  0012 ${Buffer.from('MIT-MAGIC-COOKIE-1').toString('hex')} 0010 ` +
      '00112233445566778899aabbccddeeff');
  });
});
