/**
 * Wire helpers shared by both RFB handshakes (RFC 6143 §7.1-7.3): a bounded byte accumulator, protocol-version
 * parsing, and printable reason strings. Only the handshake is ever parsed; after it the proxy is a byte pipe.
 */

/** RFB versions the proxy speaks, as minor numbers of major 3. */
export type RfbMinor = 3 | 7 | 8;

/** The 12-byte ProtocolVersion message for a minor version. */
export function versionMessage(minor: RfbMinor): Buffer {
  return Buffer.from(`RFB 003.00${minor}\n`, 'latin1');
}

/** Length of a ProtocolVersion message. */
export const VERSION_LENGTH = 12;

/**
 * Parses "RFB xxx.yyy\n" and maps it to the version to speak, per RFC 6143 §7.1.1: 3.3 and 3.7 as such, 3.8 and any
 * later 3.x (e.g. Apple's 3.889) as 3.8, the unpublished 3.4-3.6 as 3.3. Returns null for anything else.
 */
export function parseVersion(msg: Buffer): RfbMinor | null {
  const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(msg.toString('latin1'));
  if (!m) return null;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major !== 3 || minor < 3) return null;
  if (minor >= 8) return 8;
  return minor === 7 ? 7 : 3;
}

/** A printable, shortened rendering of peer-supplied bytes for logs (never trusted as text). */
export function printable(bytes: Buffer, max = 200): string {
  const s = bytes.subarray(0, max).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
  return bytes.length > max ? `${s}...` : s;
}

/**
 * Accumulates bytes from a peer and hands out exact-length reads. Holds at most `limit` bytes so a peer that floods
 * during the handshake is cut off instead of growing memory.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  get length(): number {
    return this.size;
  }

  /** Adds bytes; returns false if the queue would exceed its limit. */
  push(chunk: Buffer): boolean {
    if (this.size + chunk.length > this.limit) return false;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.size += chunk.length;
    }
    return true;
  }

  /** Removes and returns exactly `n` bytes, or null (and removes nothing) if fewer are buffered. */
  take(n: number): Buffer | null {
    if (n > this.size) return null;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.size = rest.length;
    return out;
  }

  /** The first buffered byte without consuming it, or null if none. */
  peekByte(): number | null {
    return this.size > 0 ? this.chunks[0]![0]! : null;
  }

  /** Reads a big-endian uint32 at `offset` without consuming, or null if not yet buffered. */
  peekUint32(offset = 0): number | null {
    if (this.size < offset + 4) return null;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.chunks = [all];
    return all.readUInt32BE(offset);
  }

  /** Removes and returns everything buffered. */
  drain(): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.chunks = [];
    this.size = 0;
    return all;
  }
}

/** RFB security types the proxy knows. */
export const SECURITY_INVALID = 0;
export const SECURITY_NONE = 1;
export const SECURITY_VNC_AUTH = 2;

/** uint32 big-endian as a Buffer. */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
