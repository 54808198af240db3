/**
 * After both handshakes the proxy is a plain byte pipe: VNC bytes go out as binary WebSocket messages, browser
 * messages go to the VNC socket unchanged. Memory per connection stays bounded by backpressure in both directions:
 * the VNC socket is paused while the WebSocket has more than `maxBufferedBytes` queued, and the browser's socket is
 * paused while the VNC socket's write buffer is full.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** Size of Node's read buffer for sockets: a read this long means the kernel had at least this much queued. */
const FULL_READ = 64 * 1024;

/** Byte counts of one connection, updated as data flows (read by logs, metrics and the idle check). */
export interface ByteCounters {
  /** VNC server -> browser. */
  down: number;
  /** Browser -> VNC server. */
  up: number;
}

export interface BytePipeOptions {
  /** Bytes queued towards the browser before the VNC socket is paused. */
  maxBufferedBytes: number;
  /** Called when the browser sends a text frame (RFB over WebSocket is binary only). */
  onTextFrame(): void;
}

/**
 * Connects `ws` (whose raw socket is `wsSocket`) and `tcp` both ways. Lifecycle (closing one side when the other
 * closes) is the caller's; this only moves bytes.
 */
export function pipeBytes(ws: WebSocket, wsSocket: Duplex, tcp: Socket, counters: ByteCounters, options: BytePipeOptions): void {
  const { maxBufferedBytes } = options;
  let tcpPaused = false;
  let wsPaused = false;

  // Coalescing: a read that filled Node's whole read buffer means more is waiting in the kernel, and libuv reads
  // again (up to 32 times) before returning to the event loop. Corking the browser's socket for such a burst turns
  // its frames into one writev (one wakeup of the receiver) instead of one per 64 KiB. A short read ends the burst;
  // setImmediate ends it in any case (pause, libuv's 32-read cap). Small reads (keystroke echoes, RTT) never cork.
  let corked = false;
  const uncork = () => {
    if (!corked) return;
    corked = false;
    wsSocket.uncork();
  };
  tcp.on('data', (chunk: Buffer) => {
    counters.down += chunk.length;
    if (!corked && chunk.length >= FULL_READ) {
      corked = true;
      wsSocket.cork();
      setImmediate(uncork);
    }
    ws.send(chunk);
    if (corked && chunk.length < FULL_READ) uncork();
    if (!tcpPaused && ws.bufferedAmount > maxBufferedBytes) {
      tcpPaused = true;
      tcp.pause();
    }
  });
  // `ws` has no drain event of its own; its bufferedAmount is the raw socket's write queue plus frames not yet
  // handed to it, so the raw socket's 'drain' is the moment to look again.
  wsSocket.on('drain', () => {
    if (tcpPaused && ws.bufferedAmount <= maxBufferedBytes) {
      tcpPaused = false;
      tcp.resume();
    }
  });

  const resumeWs = () => {
    wsPaused = false;
    ws.resume();
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      options.onTextFrame();
      return;
    }
    counters.up += data.length;
    if (!tcp.write(data) && !wsPaused) {
      wsPaused = true;
      ws.pause();
      tcp.once('drain', resumeWs);
    }
  });
}
