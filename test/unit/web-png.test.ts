/** The test PNG decoder, checked against PNGs Chromium-independent code produces: a hand-built one per filter type. */
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodePng, shareOfColour } from '../helpers/png.js';

function crc32(buf: Buffer): number {
  let c = ~0;
  for (const byte of buf) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** Encodes RGB rows with the given filter per row (the encoder side of each PNG filter). */
function encodeRgb(width: number, rows: number[][][], filters: number[]): Buffer {
  const stride = width * 3;
  const lines: Buffer[] = [];
  const flat = rows.map((r) => Buffer.from(r.flat()));
  flat.forEach((line, y) => {
    const prev = y > 0 ? flat[y - 1]! : Buffer.alloc(stride);
    const out = Buffer.alloc(stride + 1);
    const f = filters[y]!;
    out[0] = f;
    for (let x = 0; x < stride; x++) {
      const a = x >= 3 ? line[x - 3]! : 0;
      const b = prev[x]!;
      const c = x >= 3 ? prev[x - 3]! : 0;
      const p = a + b - c;
      const pr = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const pred = [0, a, b, (a + b) >> 1, pr][f]!;
      out[x + 1] = (line[x]! - pred) & 0xff;
    }
    lines.push(out);
  });
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(rows.length, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(lines))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('decodePng', () => {
  it('decodes every filter type back to the original pixels', () => {
    const rows = [0, 1, 2, 3, 4].map((y) => [0, 1, 2, 3].map((x) => [x * 60 + y, 200 - y * 30, (x * y * 37) % 256]));
    const img = decodePng(encodeRgb(4, rows, [0, 1, 2, 3, 4]));
    expect([img.width, img.height]).toEqual([4, 5]);
    for (let y = 0; y < 5; y++) {
      for (let x = 0; x < 4; x++) {
        const i = (y * 4 + x) * 4;
        expect([...img.rgba.slice(i, i + 4)]).toEqual([...rows[y]![x]!, 255]);
      }
    }
  });

  it('counts the share of a colour', () => {
    const blue = [0x34, 0x65, 0xa4];
    const rows = [[blue, blue], [blue, [0, 0, 0]]];
    const img = decodePng(encodeRgb(2, rows, [1, 4]));
    expect(shareOfColour(img, '#3465a4')).toBe(0.75);
    expect(shareOfColour(img, '#000000')).toBe(0.25);
  });

  it('refuses what is not a PNG', () => {
    expect(() => decodePng(Buffer.from('GIF89a....'))).toThrow(/not a PNG/);
  });
});
