/**
 * VNC authentication (RFB security type 2): the response to the server's 16-byte challenge is the challenge
 * DES-encrypted (ECB) with the password as key. Two quirks make it "VNC DES": the password is truncated/zero-padded
 * to 8 bytes, and each key byte has its bits reversed (the original implementation used a DES with the bit order
 * mirrored). OpenSSL 3 (Node 20) refuses single `des-ecb`; `des-ede3-ecb` with the key repeated three times is the
 * same cipher (EDE with K1=K2=K3 is E(K)).
 */
import { createCipheriv } from 'node:crypto';

/** Length of the VNC authentication challenge and response. */
export const VNC_CHALLENGE_LENGTH = 16;

function reverseBits(byte: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) r |= ((byte >> i) & 1) << (7 - i);
  return r;
}

/** The 8-byte DES key VNC derives from a password: first 8 bytes (Latin-1), zero-padded, bits reversed. */
export function vncDesKey(password: string): Buffer {
  const key = Buffer.alloc(8);
  // VNC passwords are bytes; characters beyond Latin-1 cannot round-trip through vncpasswd either.
  Buffer.from(password, 'latin1').copy(key, 0, 0, 8);
  for (let i = 0; i < 8; i++) key[i] = reverseBits(key[i]!);
  return key;
}

/** Encrypts a 16-byte challenge with the VNC password: the client's VNC-authentication response. */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  if (challenge.length !== VNC_CHALLENGE_LENGTH) {
    throw new RangeError(`VNC challenge must be ${VNC_CHALLENGE_LENGTH} bytes, got ${challenge.length}`);
  }
  const key = vncDesKey(password);
  const cipher = createCipheriv('des-ede3-ecb', Buffer.concat([key, key, key]), null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(challenge), cipher.final()]);
}
