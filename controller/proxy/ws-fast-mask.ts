/**
 * Word-at-a-time WebSocket (un)masking for `ws`. Every browser->server frame is masked (RFC 6455 §5.3); without the
 * optional native `bufferutil` addon, `ws` unmasks byte by byte in JavaScript, which measured ~2.5 s of CPU per GB of
 * upstream data here (test/bench/proxy.ts), more than everything else the proxy does. XOR-ing 32-bit words is ~5x
 * faster and needs no native code.
 *
 * `ws` (>= 8.18) takes `websocketMask`/`websocketUnmask` from `node:http` when Node provides them, reading them once
 * when ws/lib/buffer-util.js loads. Node 20 does not, so this module supplies them; it must therefore be imported
 * before `ws` is first loaded (controller/proxy/index.ts imports it first). If ws was loaded earlier, or Node one day
 * ships its own, nothing changes and ws keeps working as before: only slower in the first case.
 */
import http from 'node:http';

/** The mask as one native-endian 32-bit word, rotated to start at mask byte `rot`. */
function maskWord(mask: Uint8Array, rot: number): number {
  const b = new Uint8Array(4);
  for (let k = 0; k < 4; k++) b[k] = mask[(rot + k) & 3]!;
  return new Uint32Array(b.buffer)[0]!;
}

/** XORs `buffer` in place with the repeating 4-byte `mask` (mask byte 0 at buffer offset 0). */
export function unmaskInPlace(buffer: Uint8Array, mask: Uint8Array): void {
  const len = buffer.length;
  let i = 0;
  if (len >= 32) {
    // Bytes up to a 4-byte boundary, then whole words, then the tail.
    const lead = (4 - (buffer.byteOffset & 3)) & 3;
    for (; i < lead; i++) buffer[i]! ^= mask[i & 3]!;
    const words = (len - i) >>> 2;
    const word = maskWord(mask, i & 3);
    const view = new Uint32Array(buffer.buffer, buffer.byteOffset + i, words);
    for (let j = 0; j < words; j++) view[j]! ^= word;
    i += words * 4;
  }
  for (; i < len; i++) buffer[i]! ^= mask[i & 3]!;
}

/** ws's `mask(source, mask, output, offset, length)`: masked copy of `source` into `output` at `offset`. */
export function maskInto(source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number): void {
  output.set(source.subarray(0, length), offset);
  unmaskInPlace(output.subarray(offset, offset + length), mask);
}

const h = http as unknown as Record<string, unknown>;
if (typeof h.websocketUnmask !== 'function' && typeof h.websocketMask !== 'function') {
  h.websocketMask = maskInto;
  h.websocketUnmask = unmaskInPlace;
}
