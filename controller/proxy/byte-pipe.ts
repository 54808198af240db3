/**
 * After both handshakes the proxy is a plain byte pipe: VNC bytes go out as binary WebSocket messages, browser
 * messages go to the VNC socket unchanged.
 *
 * Downstream (the heavy direction) the desktop's socket is read with net's `onread` into one buffer per connection,
 * reused while nothing queued for the browser still points into it, instead of a fresh allocation per read. Reads
 * are gathered in that buffer and sent to the browser as one message per event-loop turn, not one per read: through
 * the agent's relay every read is one TLS record, at most 16 KiB, and sending each as its own message cost a frame, a
 * writev and a wake-up of the browser per 16 KiB (bench:proxy: the controller spent 4.8 s of CPU per GB downstream
 * at 16 KiB messages, against 0.5 s for the same proxy reading plain TCP in up to 1 MiB reads). A read shorter than
 * both the space it was offered and a TLS record's most is the end of what the desktop sent for now: it goes out at
 * once, so an interactive update waits for nothing. While the browser's socket has not taken the last message,
 * reading pauses until that write completes: a connection holds at most one buffer of bytes towards the browser,
 * however slow the browser. The buffer grows while messages keep filling it (a busy desktop moves in large messages:
 * fewer system calls, fewer frames for the browser to handle) and shrinks when they are small again (an idle
 * connection holds ~1 KiB).
 *
 * Upstream, the browser's socket is paused while the VNC socket holds more than UP_MAX_QUEUED unwritten.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** Read buffer of a new or quiet connection. */
const MIN_READ = 1024;
/** Growth/shrink factor between buffers. */
const STEP = 4;
/**
 * Upstream, the browser's socket pauses only while the desktop's socket holds more than this unwritten. Not at
 * write()'s false: that comes at its 16 KiB highWaterMark, and a TLS socket (the agent's relay) completes every write
 * a loop turn later, so each browser message of more than 16 KiB paused and resumed the browser's socket (a nextTick,
 * a stream flow and two epoll_ctl calls per message; bench:proxy's 64 KiB upstream spent a third of the controller's
 * time there).
 */
const UP_MAX_QUEUED = 256 * 1024;
/** Messages in a row that would fit a smaller buffer before the buffer shrinks. */
const SHRINK_AFTER = 16;
/**
 * Spare buffers a connection keeps for reuse (see `spares`): with one, a flood through TLS still allocated per switch
 * (test/unit/proxy-read-buffers.test.ts: 1,027 buffers for 64 MiB); two are enough there (6). A flooding connection
 * holds at most three buffers of up to maxReadBytes, the spares only until it goes quiet for a sweep.
 */
const MAX_SPARES = 2;
/** Largest plaintext a TLS record carries (RFC 8446 §5.1): one TLS read is never longer. */
const TLS_RECORD = 16 * 1024;

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
 * Where gathered bytes go once the pipe runs. The bytes of a message stay in the reader's buffer until the write
 * completes, so the reader asks before it writes over them.
 */
export interface VncSink {
  /** Hands on one message; returns its sequence number (1, 2, ...), or 0 if it was dropped (connection closed). */
  send(data: Buffer): number;
  /** Nothing handed to `send` is queued any more (the kernel took it all). */
  idle(): boolean;
  /** Sequence number of the last send whose write has completed (they complete in order). */
  completed(): number;
}

/**
 * Reads the VNC socket: pass `buffer` and `onRead` as net's `onread` option when connecting. Until the pipe starts,
 * reads are copied and handed to `onHandshake` (they are few and small).
 *
 * net calls `buffer()` once at the start and after every read, and the next read lands at the start of the buffer it
 * returned; so where reads land changes only in those two calls, never in the deferred send.
 */
export class VncReader {
  private buf: Buffer;
  /** What `buffer()` last returned: where the next read lands. */
  private view: Buffer;
  /** buf[start, end) has been read and not yet handed to the sink. */
  private start = 0;
  private end = 0;
  /** Sequence number of the last message sent out of `buf`. */
  private bufSeq = 0;
  /**
   * Buffers used before `buf`, each with the sequence number of its last message, kept for reuse once that message
   * is written: a stream that outruns its browser cycles through a few buffers instead of allocating one per switch.
   * Each fresh buffer (up to 1 MiB) counts as external memory, and V8 runs a full mark-compact every few tens of MB
   * of it: through the agent's relay, whose 16 KiB TLS reads keep arriving for a moment after the socket is paused,
   * one spare was often still queued, and bench:proxy's controller allocated 833 buffers and ran 16 mark-compacts
   * (~20 ms each) per 512 MiB downstream.
   */
  private readonly spares: Array<{ buf: Buffer; seq: number }> = [];
  /** Size of the last message sent, to pick the next buffer's size. */
  private lastSent = 0;
  /** Messages in a row that would have fitted a buffer a STEP smaller. */
  private smallRun = 0;
  /** trim() was called: the next fresh start takes the smallest buffer. */
  private quiet = false;
  private sendQueued = false;
  private sink: VncSink | null = null;

  /**
   * @param maxReadBytes largest buffer, so the largest message to the browser and the most a connection holds for
   *   it at once
   */
  constructor(
    private readonly maxReadBytes: number,
    private readonly onHandshake: (chunk: Buffer) => void,
  ) {
    this.buf = Buffer.allocUnsafe(Math.min(MIN_READ, maxReadBytes));
    this.view = this.buf;
  }

  /** net calls this before the first read and after every read for where the next one lands. */
  readonly buffer = (): Buffer => {
    const sink = this.sink;
    if (sink !== null && this.start === this.end && sink.idle()) {
      // Nothing pending and nothing queued points into the buffer: start again from its beginning, at a size that
      // follows the last message (larger while they fill it, smaller when they are small; a quiet connection then
      // keeps only a small buffer).
      const size = this.buf.length;
      if (this.quiet) {
        if (size > MIN_READ) this.replace(MIN_READ);
      } else if (this.filled() && size < this.maxReadBytes) this.replace(Math.min(this.maxReadBytes, size * STEP));
      else if (this.smallRun >= SHRINK_AFTER && size > MIN_READ) {
        // Quieter for a while, not for one message (a flood read through TLS alternates full and partial messages,
        // and shrinking on each partial one reallocated on the next): let the larger buffers go.
        this.spares.length = 0;
        this.replace(Math.max(MIN_READ, Math.floor(size / STEP)));
        this.smallRun = 0;
      }
      this.quiet = false;
      this.start = this.end = 0;
    } else if (sink !== null && this.buf.length - this.end < this.slack()) {
      // Too little room left, and the front is still queued for the browser: a spare whose last message has been
      // written, else a fresh one; larger if the last message filled this one. Pending bytes were sent before we got
      // here (onRead sends when room runs short), so nothing is carried over.
      const size = Math.min(this.maxReadBytes, this.buf.length * (this.filled() ? STEP : 1));
      const next = this.takeSpare(size, sink.completed());
      this.spares.push({ buf: this.buf, seq: this.bufSeq });
      if (this.spares.length > MAX_SPARES) this.spares.shift();
      this.buf = next;
      this.bufSeq = 0;
      this.start = this.end = 0;
    }
    this.view = this.end === 0 ? this.buf : this.buf.subarray(this.end);
    return this.view;
  };

  /** net calls this with each read; the sink pauses the socket itself when the browser falls behind. */
  readonly onRead = (n: number, buf: Buffer): boolean => {
    if (this.sink === null) {
      this.onHandshake(Buffer.from(buf.subarray(0, n)));
      return true;
    }
    // Reads land in the view we handed out; anything else (never expected) is copied in, or sent on its own.
    if (buf !== this.view) {
      if (this.buf.length - this.end >= n) buf.copy(this.buf, this.end, 0, n);
      else {
        this.sendPending();
        this.sink.send(Buffer.from(buf.subarray(0, n)));
        return true;
      }
    }
    this.end += n;
    if (n < Math.min(buf.length, TLS_RECORD) || this.buf.length - this.end < this.slack()) this.sendPending();
    else if (!this.sendQueued) {
      this.sendQueued = true;
      setImmediate(this.sendQueuedNow);
    }
    return true;
  };

  private readonly sendQueuedNow = (): void => {
    this.sendQueued = false;
    this.sendPending();
  };

  private sendPending(): void {
    if (this.sink === null || this.end === this.start) return;
    const data = this.buf.subarray(this.start, this.end);
    this.start = this.end;
    this.lastSent = data.length;
    this.smallRun = data.length * STEP <= this.buf.length ? this.smallRun + 1 : 0;
    const seq = this.sink.send(data);
    if (seq > 0) this.bufSeq = seq;
  }

  /** Room below which the buffer counts as full: a TLS record's worth, or a quarter of a small buffer. */
  private slack(): number {
    return Math.min(TLS_RECORD, this.buf.length / STEP);
  }

  /** The last message filled the buffer (it was sent because room ran out). */
  private filled(): boolean {
    return this.lastSent > this.buf.length - this.slack();
  }

  /**
   * The connection moved no bytes for a while: drop the spares now, and make the next read's buffer the smallest
   * (the current one is where net puts the next read, so it stays until then). A viewer that carried a flood and
   * went quiet holds at most one buffer, not three.
   */
  trim(): void {
    this.spares.length = 0;
    this.quiet = true;
  }

  /** A new buffer while the current one is free (nothing queued points into it). */
  private replace(size: number): void {
    // Only called while nothing is queued for the browser: every spare's message has been written.
    this.buf = this.takeSpare(size, Infinity);
    this.bufSeq = 0;
  }

  /** A spare of `size` whose last message is written (sequence number <= `completed`), else a fresh buffer. */
  private takeSpare(size: number, completed: number): Buffer {
    const i = this.spares.findIndex((s) => s.buf.length === size && s.seq <= completed);
    return i >= 0 ? this.spares.splice(i, 1)[0]!.buf : Buffer.allocUnsafe(size);
  }

  /** From now on reads go to `sink`, gathered as above. */
  pipeTo(sink: VncSink): void {
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
  reader.pipeTo({
    send: (data) => {
      // A send deferred to the end of the turn may find the connection closed meanwhile.
      if (ws.readyState !== ws.OPEN) return 0;
      counters.down += data.length;
      sends++;
      ws.send(data, written);
      if (wsSocket.writableLength === 0) return sends;
      // Not all of it reached the kernel: `data` (in the read buffer) is still queued; read again once it is written.
      resumeAt = sends;
      tcp.pause();
      return sends;
    },
    idle: () => wsSocket.writableLength === 0,
    completed: () => completions,
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
    tcp.write(data);
    // Past UP_MAX_QUEUED (above the desktop socket's highWaterMark) the write returned false, so 'drain' will come.
    if (!wsPaused && tcp.writableLength > UP_MAX_QUEUED) {
      wsPaused = true;
      ws.pause();
      tcp.once('drain', resumeWs);
    }
  });
}
