// Special keys the toolbar sends: each name maps to an X keysym and the browser's KeyboardEvent.code (noVNC sends
// the keysym; the code lets it use QEMU's extended key events where the server has them).
const KEYS = {
  Control: [0xffe3, 'ControlLeft'],
  Alt: [0xffe9, 'AltLeft'],
  Shift: [0xffe1, 'ShiftLeft'],
  Super: [0xffeb, 'MetaLeft'],
  Escape: [0xff1b, 'Escape'],
  Tab: [0xff09, 'Tab'],
  BackSpace: [0xff08, 'Backspace'],
  Delete: [0xffff, 'Delete'],
  Print: [0xff61, 'PrintScreen'],
  F4: [0xffc1, 'F4'],
  F8: [0xffc5, 'F8'],
  F11: [0xffc8, 'F11'],
};

/** 'Alt+F4' → [{keysym, code}, …] in press order, or null if any name is unknown. */
export function keyCombo(combo) {
  const out = [];
  for (const name of String(combo).split('+')) {
    const k = Object.hasOwn(KEYS, name) ? KEYS[name] : undefined;
    if (!k) return null;
    out.push({ keysym: k[0], code: k[1] });
  }
  return out.length > 0 ? out : null;
}
