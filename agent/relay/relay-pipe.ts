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
  let paused = false;
  const resume = () => {
    paused = false;
    from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    to.write(chunk);
    // Past maxQueued (above any highWaterMark) the write returned false, so 'drain' will come.
    if (!paused && to.writableLength > maxQueued) {
      paused = true;
      from.pause();
      to.once('drain', resume);
    }
  });
  from.on('end', () => to.end());
  // The relay paused the client while it reached the desktop; a paused socket stays paused with a 'data' listener.
  from.resume();
}
