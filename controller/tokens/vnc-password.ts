import { randomInt } from 'node:crypto';

/** VNC authentication uses at most 8 password bytes (a DES key); longer passwords are silently truncated. */
export const VNC_PASSWORD_LENGTH = 8;

/**
 * Letters and digits: printable, safe in JSON, protobuf strings and files without quoting. 62^8 ≈ 2^47.6; the
 * password is also never the only barrier (the VNC port is reachable only through the token-checked proxy).
 */
export const VNC_PASSWORD_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A fresh per-session VNC password: 8 characters, each drawn uniformly with crypto.randomInt (no modulo bias). */
export function newVncPassword(): string {
  let password = '';
  for (let i = 0; i < VNC_PASSWORD_LENGTH; i++) password += VNC_PASSWORD_ALPHABET[randomInt(VNC_PASSWORD_ALPHABET.length)];
  return password;
}
