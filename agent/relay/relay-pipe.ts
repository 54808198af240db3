/**
 * Moves a relay's bytes one way, from `from` to `to`, pausing `from` only when `to` holds more than `maxQueued`
 * bytes not yet written.
 *
 * Why not `from.pipe(to)`: pipe pauses the reader whenever `write()` returns false, that is as soon as the writer
 * holds its highWaterMark (16 KiB). A TLS socket completes every write a loop turn later, even when the kernel took
 * it at once, so towards the controller every 64 KiB read from the desktop paused the desktop's socket and resumed it
 * a turn later: two epoll_ctl calls and a loop turn per 64 KiB (strace of the agent during bench:proxy's downstream
 * flood: 3,380 epoll_ctl for 1,738 reads). Letting a few reads queue instead lets the TLS socket encrypt them
 * together and hand them to the kernel in one write, and the desktop's socket keeps reading. A server-side TLS
 * socket takes no highWaterMark option, hence a limit of our own; it still bounds what a relay buffers for a slow
 * controller.
 */
import type { Socket } from 'node:net';

export function relayOneWay(from: Socket, to: Socket, maxQueued: number): void {
  const afterWrite = pauseWhileQueued(from, to, maxQueued);
  from.on('data', (chunk: Buffer) => {
    to.write(chunk);
    afterWrite();
  });
  from.on('end', () => to.end());
  // The relay paused the client while it reached the desktop; a paused socket stays paused with a 'data' listener.
  from.resume();
}

/**
 * Returns what to call after each write to `to`: it pauses `from` while `to` holds more than `maxQueued` unwritten,
 * until `to` drains. Past maxQueued (above any highWaterMark) the write returned false, so 'drain' will come.
 */
function pauseWhileQueued(from: Socket, to: Socket, maxQueued: number): () => void {
  let paused = false;
  const resume = () => {
    paused = false;
    if (!from.destroyed) from.resume();
  };
  return () => {
    if (!paused && to.writableLength > maxQueued) {
      paused = true;
      from.pause();
      to.once('drain', resume);
    }
  };
}

/** Size of the buffers a desktop's reads land in (the most one read takes). */
const DESKTOP_READ_BYTES = 64 * 1024;
/** Most buffers a relay keeps for reuse: enough to cover what it lets queue towards the controller. */
const MAX_FREE_BUFFERS = 8;
/** After this many reads in a row shorter than SMALL_READ (interactive traffic), the relay keeps one spare only. */
const SMALL_RUN = 16;
const SMALL_READ = 16 * 1024;

/**
 * The desktop -> controller direction, the heavy one, as net's `onread` option of the desktop's socket: each read
 * lands in a buffer of a small per-relay pool, which is reused once the write of that read to `to` has completed.
 * A 'data' listener gets a fresh 64 KiB allocation per read; at bench:proxy's flood that was an ArrayBuffer per
 * 64 KiB, V8 scavenging for "external memory pressure" every few tens of MB, and a major GC now and then, all on
 * the core the desktops share. `to` must be set (attach) before the desktop's first read. A quiet relay holds the
 * buffer its next read will land in and at most one spare.
 */
export class DesktopReads {
  private readonly free: Buffer[] = [];
  private readonly maxFree: number;
  private to: Socket | null = null;
  private afterWrite: () => void = () => undefined;
  private smallRun = 0;

  constructor(private readonly maxQueued: number) {
    this.maxFree = Math.min(MAX_FREE_BUFFERS, Math.ceil(maxQueued / DESKTOP_READ_BYTES) + 2);
  }

  /** net calls this before the first read and after each read: where the next read lands. */
  readonly buffer = (): Buffer => this.free.pop() ?? Buffer.allocUnsafe(DESKTOP_READ_BYTES);

  /** net calls this with each read. */
  readonly callback = (n: number, buf: Buffer): boolean => {
    const to = this.to;
    if (to === null || to.destroyed) return true;
    to.write(buf.subarray(0, n), () => {
      if (this.free.length < this.maxFree) this.free.push(buf);
    });
    // Interactive traffic for a while (not one short read: a flood has those too) gives the spares back.
    this.smallRun = n < SMALL_READ ? this.smallRun + 1 : 0;
    if (this.smallRun >= SMALL_RUN && this.free.length > 1) this.free.length = 1;
    this.afterWrite();
    return true;
  };

  /** From now on reads of `from` go to `to`; the end of `from` ends `to`. */
  attach(from: Socket, to: Socket): void {
    this.to = to;
    this.afterWrite = pauseWhileQueued(from, to, this.maxQueued);
    from.on('end', () => to.end());
  }
}
