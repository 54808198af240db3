/** The word-wise WebSocket masking must equal RFC 6455's byte-wise XOR at every length and alignment. */
import { describe, expect, it } from 'vitest';
import { maskInto, unmaskInPlace } from '../../controller/proxy/ws-fast-mask.js';

function reference(data: Uint8Array, mask: Uint8Array): Buffer {
  return Buffer.from(data.map((b, i) => b ^ mask[i & 3]!));
}

describe('ws fast masking', () => {
  const mask = Uint8Array.of(0x12, 0x34, 0x56, 0x78);
  const data = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) & 255));

  it('unmasks like the byte loop for every offset and length', () => {
    for (let start = 0; start < 8; start++) {
      for (const len of [0, 1, 3, 31, 32, 33, 64, 127, 200]) {
        const backing = Buffer.alloc(400);
        const view = backing.subarray(start, start + len);
        data.copy(view, 0, 0, len);
        unmaskInPlace(view, mask);
        expect(Buffer.from(view)).toEqual(reference(data.subarray(0, len), mask));
        expect(backing.subarray(0, start).every((b) => b === 0)).toBe(true);
        expect(backing.subarray(start + len).every((b) => b === 0)).toBe(true);
      }
    }
  });

  it('masks into an output buffer at an offset', () => {
    const out = Buffer.alloc(110);
    maskInto(data, mask, out, 6, 100);
    expect(out.subarray(6, 106)).toEqual(reference(data.subarray(0, 100), mask));
    expect(out.subarray(0, 6).every((b) => b === 0)).toBe(true);
  });

  it('is what ws uses when loaded after it (round trip through a real ws pair is covered by the proxy tests)', async () => {
    const http = (await import('node:http')) as unknown as { default: Record<string, unknown> };
    expect(http.default.websocketUnmask).toBe(unmaskInPlace);
  });
});
