/**
 * The proxy's downstream read buffers (VncReader) under the read pattern of the agent's relay: reads of one TLS
 * record (16 KiB) at a time, four per loop turn (one 64 KiB socket read decrypted), and a browser socket that
 * completes each write a turn or two later. An operator notices the difference as CPU: every fresh buffer is external
 * memory to V8, and a few tens of MB of it cost a full mark-compact. So a flood must cycle through a few buffers, not
 * allocate one per switch, and no byte may change before its write completes (a buffer reused too early would).
 *
 * net's `onread` contract is played by the test: buffer() before the first read and after each read, the read lands
 * at the start of what buffer() returned. The sink stands in for the browser's WebSocket (the real one is exercised
 * end to end by test/integration/proxy-byte-pipe.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { VncReader, type VncSink } from '../../controller/proxy/byte-pipe.js';

const RECORD = 16 * 1024;
const MAX_READ = 1024 * 1024;

/** Byte i of the stream. */
const byteAt = (i: number) => (i * 31 + (i >>> 11)) & 0xff;

function fill(b: Buffer, n: number, offset: number): void {
  for (let k = 0; k < n; k++) b[k] = byteAt(offset + k);
}

/** A browser socket that takes every message and completes its writes `lag` turns later, checking their bytes then. */
class LaggingSink implements VncSink {
  private readonly pending: Array<{ data: Buffer; seq: number; offset: number; turn: number }> = [];
  private seq = 0;
  private done = 0;
  private offset = 0;
  bad = -1;
  delivered = 0;
  constructor(private readonly lag: number, private turn = 0) {}
  send(data: Buffer): number {
    this.pending.push({ data, seq: ++this.seq, offset: this.offset, turn: this.turn });
    this.offset += data.length;
    return this.seq;
  }
  idle(): boolean {
    return this.pending.length === 0;
  }
  completed(): number {
    return this.done;
  }
  /** One loop turn passed: complete the writes that are `lag` turns old, checking what they carry now. */
  tick(all = false): void {
    this.turn++;
    while (this.pending.length > 0 && (all || this.turn - this.pending[0]!.turn >= this.lag)) {
      const p = this.pending.shift()!;
      for (let k = 0; k < p.data.length && this.bad < 0; k++) if (p.data[k] !== byteAt(p.offset + k)) this.bad = p.offset + k;
      this.delivered += p.data.length;
      this.done = p.seq;
    }
  }
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Streams `total` bytes through `reader` in TLS-record reads, `perTurn` per loop turn; returns the buffers it saw. */
async function flood(reader: VncReader, sink: LaggingSink, total: number, perTurn = 4): Promise<Set<ArrayBufferLike>> {
  const seen = new Set<ArrayBufferLike>();
  let offset = 0;
  let b = reader.buffer();
  while (offset < total) {
    for (let r = 0; r < perTurn && offset < total; r++) {
      seen.add(b.buffer);
      const n = Math.min(RECORD, b.length, total - offset);
      fill(b, n, offset);
      offset += n;
      reader.onRead(n, b);
      b = reader.buffer();
    }
    await turn();
    sink.tick();
  }
  await turn();
  sink.tick(true);
  return seen;
}

/** A reader piped to a sink that completes writes `lag` turns late, after an 8 MiB flood. */
async function afterFlood(lag: number): Promise<{ reader: VncReader; sink: LaggingSink }> {
  const sink = new LaggingSink(lag);
  const reader = new VncReader(MAX_READ, () => undefined);
  reader.pipeTo(sink);
  await flood(reader, sink, 8 * 1024 * 1024);
  return { reader, sink };
}

describe('proxy read buffers', () => {
  it('a 64 MiB flood in TLS-record reads cycles through a few buffers, and no byte changes before its write completes', async () => {
    const sink = new LaggingSink(2);
    const reader = new VncReader(MAX_READ, () => undefined);
    reader.pipeTo(sink);
    const total = 64 * 1024 * 1024;
    const seen = await flood(reader, sink, total);
    expect(sink.bad).toBe(-1);
    expect(sink.delivered).toBe(total);
    // Growth from 1 KiB to 1 MiB takes 6 sizes; then the current buffer and its two spares.
    expect(seen.size).toBeLessThanOrEqual(6 + 3);
  });

  it('a connection that goes quiet gives its large buffers back: after trim(), the next read lands in a 1 KiB buffer', async () => {
    const { reader, sink } = await afterFlood(1);
    // The flood grew the buffer (to 64 KiB: a turn's four records are sent together).
    let b = reader.buffer();
    expect(b.length).toBeGreaterThanOrEqual(64 * 1024);
    reader.trim();
    // The read net already has a buffer for still lands there; the one after it gets a small buffer.
    fill(b, 10, 8 * 1024 * 1024);
    reader.onRead(10, b);
    sink.tick(true);
    b = reader.buffer();
    expect(b.length).toBeLessThanOrEqual(1024);
    expect(sink.bad).toBe(-1);
  });

  it('small interactive updates between floods do not shrink the buffer at once (a flood would reallocate it)', async () => {
    const { reader, sink } = await afterFlood(1);
    const large = reader.buffer();
    // One short read (a partial TLS record: the desktop paused), sent at once and completed.
    fill(large, 100, 8 * 1024 * 1024);
    reader.onRead(100, large);
    sink.tick(true);
    expect(reader.buffer().buffer).toBe(large.buffer);
  });
});
