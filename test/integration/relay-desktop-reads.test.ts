/**
 * The agent relay's desktop -> controller direction (DesktopReads) over real sockets: a desktop on a Unix socket
 * streams a pattern as fast as it can, the relay writes it to a loopback TCP socket whose reader keeps pausing and
 * resuming. Every byte must arrive in order, the desktop must stall while the controller side is stalled, and the
 * reads must land in a few reused buffers (each fresh one is V8 external memory the blade's agent pays for in GC).
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DesktopReads } from '../../agent/relay/relay-pipe.js';
import { waitFor } from '../helpers/agent-process.js';
import { stalled } from '../helpers/stalled.js';

const BLOCK = randomBytes(1024 * 1024 + 7);
const MAX_QUEUED = 256 * 1024;

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function listen(server: Server, where: string | number): Promise<void> {
  return new Promise((resolve) => server.listen(typeof where === 'string' ? where : { port: where, host: '127.0.0.1' }, resolve));
}

interface Rig {
  /** Bytes the desktop has handed to its socket so far. */
  written(): number;
  /** The controller side's socket (the test pauses and resumes it) and what it received. */
  controller: Socket;
  received: { offset: number; bad: number };
  /** ArrayBuffers the relay's reads landed in. */
  buffers: Set<ArrayBufferLike>;
}

async function rig(total: number): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'vd-reads-'));
  const path = join(dir, 'desktop.sock');
  let written = 0;
  const desktopServer = createServer((s) => {
    const pump = () => {
      while (written < total) {
        const at = written % BLOCK.length;
        const chunk = BLOCK.subarray(at, Math.min(BLOCK.length, at + 100_003, at + total - written));
        written += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
  await listen(desktopServer, path);
  const received = { offset: 0, bad: -1 };
  let controller!: Socket;
  const controllerServer = createServer();
  const accepted = new Promise<void>((resolve) => {
    controllerServer.once('connection', (s) => {
      controller = s;
      s.on('data', (d: Buffer) => {
        for (let k = 0; k < d.length && received.bad < 0; k++) {
          if (d[k] !== BLOCK[(received.offset + k) % BLOCK.length]) received.bad = received.offset + k;
        }
        received.offset += d.length;
      });
      resolve();
    });
  });
  await listen(controllerServer, 0);
  const port = (controllerServer.address() as { port: number }).port;
  const toController = connect({ host: '127.0.0.1', port });
  await once(toController, 'connect');
  await accepted;

  const reads = new DesktopReads(MAX_QUEUED);
  const buffers = new Set<ArrayBufferLike>();
  const onread = {
    buffer: () => {
      const b = reads.buffer();
      buffers.add(b.buffer);
      return b;
    },
    callback: reads.callback,
  };
  const desktop = connect({ path, onread });
  desktop.once('connect', () => reads.attach(desktop, toController));
  cleanups.push(() => {
    desktop.destroy();
    toController.destroy();
    controller.destroy();
    desktopServer.close();
    controllerServer.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { written: () => written, controller, received, buffers };
}

describe('agent relay: desktop reads', () => {
  it('a 64 MiB flood to a reader that keeps pausing arrives whole and in order, through a few reused buffers', async () => {
    const total = 64 * 1024 * 1024;
    const r = await rig(total);
    const flap = setInterval(() => (r.controller.isPaused() ? r.controller.resume() : r.controller.pause()), 3);
    try {
      await waitFor(() => r.received.offset >= total, 'the whole stream', 30_000);
    } finally {
      clearInterval(flap);
      r.controller.resume();
    }
    expect(r.received.bad).toBe(-1);
    expect(r.received.offset).toBe(total);
    // One buffer per read would be ~1,000 here (64 KiB reads); the pool holds what may queue plus the next read's.
    expect(r.buffers.size).toBeLessThanOrEqual(MAX_QUEUED / (64 * 1024) + 2 + 2);
  });

  it('a stalled controller side stalls the desktop: the relay queues a bounded amount', async () => {
    const total = 256 * 1024 * 1024;
    const r = await rig(total);
    r.controller.pause();
    const stuck = await stalled(r.written);
    expect(stuck).toBeLessThan(total);
    r.controller.resume();
    await waitFor(() => r.received.offset >= total, 'the whole stream', 60_000);
    expect(r.received.bad).toBe(-1);
  });
});
