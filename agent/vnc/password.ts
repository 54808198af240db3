/** The VNC password file format: what `vncpasswd -f` writes and what Xvnc's `-rfbauth` reads. */
import { createCipheriv } from 'node:crypto';

/**
 * The fixed DES key VNC uses to obfuscate stored passwords (d3des key 23 82 107 6 35 78 88 7 with each byte's bits
 * reversed, so standard DES can use it). Obfuscation, not encryption: the file's 0600 mode is the protection.
 */
const OBFUSCATION_KEY = Buffer.from('e84ad660c4721ae0', 'hex');

/**
 * DES-ECB of one 8-byte block. Node 20's OpenSSL 3 refuses single DES, but triple DES with the key repeated three
 * times is exactly single DES.
 */
export function desEcb(key8: Buffer, block8: Buffer): Buffer {
  const cipher = createCipheriv('des-ede3-ecb', Buffer.concat([key8, key8, key8]), null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(block8), cipher.final()]);
}

/** The 8 bytes of a `vncpasswd -f` file for `password` (truncated or zero-padded to 8 bytes, as TigerVNC does). */
export function obfuscateVncPassword(password: string): Buffer {
  const block = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(block, 0, 0, 8);
  return desEcb(OBFUSCATION_KEY, block);
}
