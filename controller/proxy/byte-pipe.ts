/**
 * After both handshakes the proxy is a plain byte pipe: VNC bytes go out as binary WebSocket messages, browser
 * messages go to the VNC socket unchanged.
 *
 * Downstream (the heavy direction) the VNC socket is read with net's `onread` into one buffer per connection, reused
 * from read to read, instead of a fresh allocation per read; each read becomes one message, written straight to the
 * browser's socket. When the kernel takes the whole message at once (the usual case) the buffer is free again
 * immediately. When it does not, the socket's write queue still references the buffer, so reading pauses until that
 * write completes: a connection holds at most one buffer of bytes towards the browser, however slow the browser.
 * The buffer grows while reads fill it (a busy desktop moves in large messages: fewer system calls, fewer frames
 * for the browser to handle) and shrinks when reads are small again (an idle connection holds ~1 KiB).
 *
 * Upstream, the browser's socket is paused while the VNC socket's write buffer is full.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** Read buffer of a new or quiet connection. */
const MIN_READ = 1024;
/** Growth/shrink factor between reads. */
const STEP = 4;

/** Byte counts of one connection, updated as data flows (read by logs, metrics and the idle check). */
export interface ByteCounters {
  /** VNC server -> browser. */
  down: number;
  /** Browser -> VNC server. */
  up: number;
}

export interface BytePipeOptions {
  /** Called when the browser sends a text frame (RFB over WebSocket is binary only). */
  onTextFrame(): void;
}

/**
 * Reads the VNC socket: pass `buffer` and `onRead` as net's `onread` option when connecting. Until the pipe starts,
 * reads are copied and handed to `onHandshake` (they are few and small).
 */
export class VncReader {
  private buf: Buffer;
  private sink: ((data: Buffer) => boolean) | null = null;

  /**
   * @param maxReadBytes largest read, so the largest message to the browser and the most memory a connection holds
   *   for bytes towards it
   */
  constructor(
    private readonly maxReadBytes: number,
    private readonly onHandshake: (chunk: Buffer) => void,
  ) {
    this.buf = Buffer.allocUnsafe(Math.min(MIN_READ, maxReadBytes));
  }

  /** net calls this after every read for the buffer of the next one. */
  readonly buffer = (): Buffer => this.buf;

  /** net calls this with each read; returning false pauses the socket. */
  readonly onRead = (n: number, buf: Buffer): boolean => {
    if (this.sink === null) {
      this.onHandshake(Buffer.from(buf.subarray(0, n)));
      return true;
    }
    const size = buf.length;
    // Pick the next read's buffer first: the sink may leave this one referenced by a pending write.
    if (n === size && size < this.maxReadBytes) this.buf = Buffer.allocUnsafe(Math.min(this.maxReadBytes, size * STEP));
    else if (n * STEP <= size && size > MIN_READ) this.buf = Buffer.allocUnsafe(Math.max(MIN_READ, size / STEP));
    return this.sink(n === size ? buf : buf.subarray(0, n));
  };

  /** From now on reads go to `sink` uncopied; it returns false to pause reading. */
  pipeTo(sink: (data: Buffer) => boolean): void {
    this.sink = sink;
  }
}

/**
 * Connects `ws` (whose raw socket is `wsSocket`) and `tcp` (read through `reader`) both ways. Lifecycle (closing one
 * side when the other closes) is the caller's; this only moves bytes.
 */
export function pipeBytes(ws: WebSocket, wsSocket: Duplex, tcp: Socket, reader: VncReader, counters: ByteCounters, options: BytePipeOptions): void {
  // Write callbacks come in order: reading resumes when the callback of the send that paused it has come.
  let sends = 0;
  let completions = 0;
  let resumeAt = 0;
  const written = () => {
    completions++;
    if (resumeAt === 0 || completions < resumeAt) return;
    resumeAt = 0;
    if (!tcp.destroyed) tcp.resume();
  };
  reader.pipeTo((data) => {
    counters.down += data.length;
    sends++;
    ws.send(data, written);
    if (wsSocket.writableLength === 0) return true;
    // Not all of it reached the kernel: `data` (in the read buffer) is still queued; read again once it is written.
    resumeAt = sends;
    return false;
  });

  let wsPaused = false;
  const resumeWs = () => {
    wsPaused = false;
    ws.resume();
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      options.onTextFrame();
      return;
    }
    // A destroyed desktop socket (the desktop went away; the connection may wait for its session's end) takes
    // nothing and never drains: pausing the browser then would also keep ws from reading the browser's answer to
    // our close frame, and the browser would report the close only after its own timeout (2 s in Chromium).
    if (tcp.destroyed) return;
    counters.up += data.length;
    if (!tcp.write(data) && !wsPaused) {
      wsPaused = true;
      ws.pause();
      tcp.once('drain', resumeWs);
    }
  });
}
