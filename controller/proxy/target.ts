/**
 * What the proxy connects a browser to: the target a token leads to, and how a desktop is reached. Its own file
 * because both the proxy (index.ts) and each connection (connection.ts) use it, and the controller builds it
 * (sessions/token-authorizer.ts).
 */
import type { Socket } from 'node:net';

/** net's `onread` option: reads land in `buffer()` and are handed to `callback`. */
export interface DesktopReads {
  buffer: () => Buffer;
  callback: (n: number, buf: Buffer) => boolean;
}

/** A byte stream to a desktop: usable at once; `opened` settles when the desktop answered (or why it did not). */
export interface DesktopStream {
  socket: Socket;
  /** Rejects with a VncDispatchError that says why the desktop cannot be reached (its code is the close reason). */
  opened: Promise<void>;
}

/**
 * Opens the way to one desktop. The controller's is its blade agent's relay (mutual TLS, agent-client/); the proxy
 * itself opens no connection to anything.
 */
export type DesktopDialer = (reads: DesktopReads, timeoutMs: number) => DesktopStream;

/** Where a token leads: resolved by the controller from the session record and its registered blade. */
export interface ProxyTarget {
  sessionId: string;
  username: string;
  blade: string;
  /** How to reach the desktop: chosen by the controller from the session record, never from the request. */
  desktop: DesktopDialer;
  /** The session's VNC password; used for the RFB handshake with Xvnc only, never sent to the browser or logged. */
  password: string;
  /** SHA-256 of the token the connection was opened with (what revalidate() answers about). */
  tokenHash: string;
}
