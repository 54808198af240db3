/**
 * The two RFB handshake state machines and VNC DES, fed byte streams directly: every protocol version the proxy
 * accepts from Xvnc (3.3, 3.7, 3.8) and from browsers, messages split at every byte, and bounded lengths.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { RfbBrowserHandshake } from '../../controller/proxy/rfb-browser-handshake.js';
import { RfbClientHandshake } from '../../controller/proxy/rfb-handshake.js';
import { vncAuthResponse, vncDesKey } from '../../shared/vnc-des.js';

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const challenge = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

describe('VNC DES', () => {
  it('matches vncpasswd: the fixed obfuscation key encrypts "password" to dbd83cfd727a1458', () => {
    // vncpasswd's obfuscation is VNC DES with a fixed key; as a "password" that key is these 8 bytes.
    const fixedKeyAsPassword = Buffer.from([23, 82, 107, 6, 35, 78, 88, 7]).toString('latin1');
    expect(vncDesKey(fixedKeyAsPassword).toString('hex')).toBe('e84ad660c4721ae0');
    const block = Buffer.concat([Buffer.from('password'), Buffer.alloc(8)]);
    expect(vncAuthResponse(fixedKeyAsPassword, block).subarray(0, 8).toString('hex')).toBe('dbd83cfd727a1458');
    const fromTool = execFileSync('vncpasswd', ['-f'], { input: 'password\n' }).toString('hex');
    expect(fromTool).toBe('dbd83cfd727a1458');
  });

  it('uses only the first 8 password bytes and rejects a wrong-size challenge', () => {
    expect(vncAuthResponse('abcdefgh-ignored', challenge)).toEqual(vncAuthResponse('abcdefgh', challenge));
    expect(vncAuthResponse('abc', challenge)).not.toEqual(vncAuthResponse('abd', challenge));
    expect(() => vncAuthResponse('x', Buffer.alloc(8))).toThrow(RangeError);
  });
});

/** Feeds `server` to a client handshake, split into pieces of `step` bytes; returns everything it sent. */
function runClient(server: Buffer[], step = Infinity, password = 'secret') {
  const hs = new RfbClientHandshake({ password });
  const sent: Buffer[] = [];
  let done = false;
  const all = Buffer.concat(server);
  for (let i = 0; i < all.length; i += Math.min(step, all.length)) {
    const out = hs.feed(all.subarray(i, i + Math.min(step, all.length)));
    sent.push(...out.send);
    done = out.done;
  }
  return { hs, sent: Buffer.concat(sent), done };
}

describe('RfbClientHandshake (proxy -> Xvnc)', () => {
  const auth = vncAuthResponse('secret', challenge);
  const scripts: Array<[string, Buffer[], Buffer, number]> = [
    ['3.8 VNC auth', [Buffer.from('RFB 003.008\n'), Buffer.of(2, 1, 2), challenge, u32(0)], Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.of(2), auth]), 2],
    ['3.7 VNC auth', [Buffer.from('RFB 003.007\n'), Buffer.of(1, 2), challenge, u32(0)], Buffer.concat([Buffer.from('RFB 003.007\n'), Buffer.of(2), auth]), 2],
    ['3.3 VNC auth', [Buffer.from('RFB 003.003\n'), u32(2), challenge, u32(0)], Buffer.concat([Buffer.from('RFB 003.003\n'), auth]), 2],
    ['3.8 None', [Buffer.from('RFB 003.008\n'), Buffer.of(1, 1), u32(0)], Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.of(1)]), 1],
    ['3.7 None (no SecurityResult)', [Buffer.from('RFB 003.007\n'), Buffer.of(1, 1)], Buffer.concat([Buffer.from('RFB 003.007\n'), Buffer.of(1)]), 1],
    ['3.3 None (no SecurityResult)', [Buffer.from('RFB 003.003\n'), u32(1)], Buffer.from('RFB 003.003\n'), 1],
    ['Apple 3.889 as 3.8', [Buffer.from('RFB 003.889\n'), Buffer.of(1, 2), challenge, u32(0)], Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.of(2), auth]), 2],
  ];
  it.each(scripts)('%s, whole and byte by byte', (_name, server, expected, security) => {
    for (const step of [Infinity, 1]) {
      const { hs, sent, done } = runClient(server, step);
      expect(done).toBe(true);
      expect(sent).toEqual(expected);
      expect(hs.security).toBe(security);
      expect(hs.takeRest().length).toBe(0);
    }
  });

  it('keeps bytes after SecurityResult for the browser', () => {
    const { hs } = runClient([Buffer.from('RFB 003.008\n'), Buffer.of(1, 1), u32(0), Buffer.from('extra')]);
    expect(hs.takeRest().toString()).toBe('extra');
  });

  const failures: Array<[string, Buffer[], string, RegExp]> = [
    ['garbage version', [Buffer.from('SSH-2.0-xx\r\n')], 'VD_ERR_VNC_HANDSHAKE', /unsupported protocol version/],
    ['RFB 4.0', [Buffer.from('RFB 004.000\n')], 'VD_ERR_VNC_HANDSHAKE', /unsupported protocol version/],
    ['connection refused with reason', [Buffer.from('RFB 003.008\n'), Buffer.of(0), u32(9), Buffer.from('blacklist')], 'VD_ERR_VNC_HANDSHAKE', /refused the connection: blacklist/],
    ['3.3 invalid with reason', [Buffer.from('RFB 003.003\n'), u32(0), u32(3), Buffer.from('no!')], 'VD_ERR_VNC_HANDSHAKE', /refused the connection: no!/],
    ['reason 2^32-1 long', [Buffer.from('RFB 003.008\n'), Buffer.of(0), u32(0xffffffff)], 'VD_ERR_VNC_HANDSHAKE', /4294967295-byte failure reason/],
    ['only unknown security types', [Buffer.from('RFB 003.008\n'), Buffer.of(2, 16, 19)], 'VD_ERR_VNC_HANDSHAKE', /no supported security type \(offered 16,19\)/],
    ['3.3 unknown security type', [Buffer.from('RFB 003.003\n'), u32(16)], 'VD_ERR_VNC_HANDSHAKE', /unsupported security type 16/],
    ['3.8 auth failure with reason', [Buffer.from('RFB 003.008\n'), Buffer.of(1, 2), challenge, u32(1), u32(4), Buffer.from('nope')], 'VD_ERR_VNC_AUTH_FAILED', /nope/],
    ['3.7 auth failure', [Buffer.from('RFB 003.007\n'), Buffer.of(1, 2), challenge, u32(1)], 'VD_ERR_VNC_AUTH_FAILED', /SecurityResult 1/],
    ['flood', [Buffer.from('RFB 003.008\n'), Buffer.of(255), Buffer.alloc(70_000, 0x41)], 'VD_ERR_VNC_HANDSHAKE', /more handshake bytes/],
  ];
  it.each(failures)('%s -> %s', (_name, server, code, message) => {
    let err: unknown;
    try {
      runClient(server);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code });
    expect((err as Error).message).toMatch(message);
  });

  it('waits (does not fail) on a partial message', () => {
    expect(runClient([Buffer.from('RFB 003.008\n'), Buffer.of(0), u32(100), Buffer.from('partial')]).done).toBe(false);
  });
});

describe('RfbBrowserHandshake (browser -> proxy)', () => {
  function runBrowser(client: Buffer[]) {
    const hs = new RfbBrowserHandshake();
    const sent: Buffer[] = [hs.start()];
    let clientInit: Buffer | null = null;
    for (const b of client) {
      const out = hs.feed(b);
      sent.push(...out.send);
      clientInit = out.clientInit ?? clientInit;
    }
    return { sent: Buffer.concat(sent), clientInit };
  }

  it('3.8: offers only None, sends SecurityResult OK, hands over ClientInit', () => {
    const r = runBrowser([Buffer.from('RFB 003.008\n'), Buffer.of(1), Buffer.of(1)]);
    expect(r.sent).toEqual(Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.of(1, 1), u32(0)]));
    expect(r.clientInit).toEqual(Buffer.of(1));
  });

  it('3.7: no SecurityResult for None; 3.3: the server names None', () => {
    const r7 = runBrowser([Buffer.from('RFB 003.007\n'), Buffer.of(1), Buffer.of(0)]);
    expect(r7.sent).toEqual(Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.of(1, 1)]));
    expect(r7.clientInit).toEqual(Buffer.of(0));
    const r3 = runBrowser([Buffer.concat([Buffer.from('RFB 003.003\n'), Buffer.of(1)])]);
    expect(r3.sent).toEqual(Buffer.concat([Buffer.from('RFB 003.008\n'), u32(1)]));
    expect(r3.clientInit).toEqual(Buffer.of(1));
  });

  it('refuses a browser that picks VNC auth (with a 3.8 failure reason) or sends garbage', () => {
    expect(() => runBrowser([Buffer.from('RFB 003.008\n'), Buffer.of(2)])).toThrow(
      expect.objectContaining({ code: 'VD_ERR_BROWSER_HANDSHAKE', reply: expect.any(Buffer) }),
    );
    expect(() => runBrowser([Buffer.from('GET / HTTP/1.1\r\n')])).toThrow(expect.objectContaining({ code: 'VD_ERR_BROWSER_HANDSHAKE' }));
  });
});
