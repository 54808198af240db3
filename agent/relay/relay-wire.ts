/**
 * The relay's opening exchange (see RelayOpen in agent.proto): the client's 8-byte magic, then a RelayOpen; the
 * agent's RelayOpened. Each message is a 2-byte big-endian length and the protobuf bytes.
 */
import { RelayOpen, RelayOpened } from '../../proto/gen/vncdispatch/agent/v1/agent.js';

/** What a relay client sends first, on TLS (with ALPN RELAY_ALPN) and on a plain --insecure connection alike. */
export const RELAY_MAGIC = Buffer.from('VDRELAY1', 'latin1');
/** The ALPN protocol a relay client offers; gRPC clients offer "h2". */
export const RELAY_ALPN = 'vncdispatch-relay/1';
/** Longest RelayOpen accepted: a session id is 36 characters, so anything near this is not a relay client. */
export const MAX_RELAY_OPEN = 256;

export type ParsedOpen = { open: RelayOpen; rest: Buffer } | { error: string } | null;

/** Parses magic + framed RelayOpen from what arrived so far: null = need more bytes. */
export function parseRelayOpen(buf: Buffer): ParsedOpen {
  const m = RELAY_MAGIC.length;
  const head = buf.subarray(0, Math.min(m, buf.length));
  if (!head.equals(RELAY_MAGIC.subarray(0, head.length))) return { error: 'not a relay client (bad magic)' };
  if (buf.length < m + 2) return null;
  const len = buf.readUInt16BE(m);
  if (len > MAX_RELAY_OPEN) return { error: `RelayOpen of ${len} bytes (limit ${MAX_RELAY_OPEN})` };
  if (buf.length < m + 2 + len) return null;
  try {
    return { open: RelayOpen.decode(buf.subarray(m + 2, m + 2 + len)), rest: buf.subarray(m + 2 + len) };
  } catch {
    return { error: 'RelayOpen is not valid protobuf' };
  }
}

export function encodeRelayOpened(msg: RelayOpened): Buffer {
  const body = RelayOpened.encode(msg).finish();
  const out = Buffer.allocUnsafe(2 + body.length);
  out.writeUInt16BE(body.length, 0);
  out.set(body, 2);
  return out;
}
