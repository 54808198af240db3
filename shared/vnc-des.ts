/**
 * The DES that VNC uses in two places: the `vncpasswd -f` password file (the password DES-encrypted with a fixed key,
 * which Xvnc's -rfbauth reads), and VNC authentication (RFB security type 2: the server's 16-byte challenge
 * DES-encrypted with the password as key). The agent writes the first; the controller's proxy answers the second.
 *
 * Node 20's OpenSSL 3 refuses single `des-ecb`; `des-ede3-ecb` with the key repeated three times is the same cipher
 * (EDE with K1=K2=K3 is E(K)).
 */
import { createCipheriv } from 'node:crypto';

/** Length of the VNC authentication challenge and response. */
export const VNC_CHALLENGE_LENGTH = 16;

/**
 * The fixed DES key VNC uses to obfuscate stored passwords (d3des key 23 82 107 6 35 78 88 7 with each byte's bits
 * reversed, so standard DES can use it). Obfuscation, not encryption: the file's 0600 mode is the protection.
 */
const OBFUSCATION_KEY = Buffer.from('e84ad660c4721ae0', 'hex');

/** DES-ECB of whole 8-byte blocks with an 8-byte key. */
export function desEcb(key8: Buffer, blocks: Buffer): Buffer {
  const cipher = createCipheriv('des-ede3-ecb', Buffer.concat([key8, key8, key8]), null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(blocks), cipher.final()]);
}

/** A VNC password as 8 bytes: the first 8 bytes (Latin-1), zero-padded, as TigerVNC and vncpasswd take it. */
function passwordBlock(password: string): Buffer {
  const block = Buffer.alloc(8);
  // VNC passwords are bytes; characters beyond Latin-1 cannot round-trip through vncpasswd either.
  Buffer.from(password, 'latin1').copy(block, 0, 0, 8);
  return block;
}

function reverseBits(byte: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) r |= ((byte >> i) & 1) << (7 - i);
  return r;
}

/**
 * The DES key VNC authentication derives from a password: its 8-byte block with each byte's bits reversed (the
 * original implementation used a DES with the bit order mirrored).
 */
export function vncDesKey(password: string): Buffer {
  const key = passwordBlock(password);
  for (let i = 0; i < 8; i++) key[i] = reverseBits(key[i]!);
  return key;
}

/** Encrypts a 16-byte challenge with the VNC password: the client's VNC-authentication response. */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  if (challenge.length !== VNC_CHALLENGE_LENGTH) {
    throw new RangeError(`VNC challenge must be ${VNC_CHALLENGE_LENGTH} bytes, got ${challenge.length}`);
  }
  return desEcb(vncDesKey(password), challenge);
}

/** The 8 bytes of a `vncpasswd -f` file for `password` (truncated or zero-padded to 8 bytes, as TigerVNC does). */
export function obfuscateVncPassword(password: string): Buffer {
  return desEcb(OBFUSCATION_KEY, passwordBlock(password));
}
