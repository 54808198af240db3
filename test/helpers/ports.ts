/** Loopback TCP ports for tests and benchmarks. */
import { createServer } from 'node:net';

/** A port the kernel hands out for 127.0.0.1 right now (free until someone else takes it). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * Listens on the first port of `first..last` that is free on 127.0.0.1 (where test agents' Xvnc listen), standing in
 * for another program that holds a VNC port. Returns the port and a close function.
 */
export async function occupyPort(first: number, last: number): Promise<{ port: number; close: () => Promise<void> }> {
  for (let port = first; port <= last; port++) {
    const server = createServer((s) => s.destroy());
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(true));
    });
    if (ok) return { port, close: () => new Promise<void>((r) => server.close(() => r())) };
  }
  throw new Error(`no free port in ${first}-${last}`);
}
