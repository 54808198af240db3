// How much clipboard text crosses between the browser and the desktop, in UTF-8 bytes. TigerVNC's Xvnc drops
// clipboard data over its MaxCutText (256 KiB by default) in either direction, so a larger paste would vanish
// silently; the viewer says so instead.
export const MAX_CLIPBOARD_BYTES = 256 * 1024;

const encoder = new TextEncoder();

/** The UTF-8 size of `text`, without encoding strings that are certainly too large. */
export function clipboardBytes(text) {
  // A UTF-16 code unit is 1 to 3 UTF-8 bytes: more code units than the limit can never fit.
  if (text.length > MAX_CLIPBOARD_BYTES) return text.length;
  return encoder.encode(text).length;
}
