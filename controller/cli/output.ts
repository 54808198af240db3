/** How the operator commands print: aligned tables and key-value lists for people, JSON for scripts, and progress. */
import { formatBytes } from '../format-bytes.js';

/** Control characters (a hostile blade error or name must not move the cursor or clear the screen). */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/g;

/** Formats rows as columns separated by two spaces, with a header line. Cells are single-line text. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const clean = (v: string | number | null | undefined): string =>
    (v === null || v === undefined || v === '' ? '-' : String(v)).replace(CONTROL, ' ');
  const all = [headers, ...rows.map((r) => r.map(clean))];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return `${all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n')}\n`;
}

/** Formats `label: value` lines, labels aligned. */
export function fields(pairs: [string, string | number | null | undefined][]): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w + 1)} ${v === null || v === undefined || v === '' ? '-' : String(v).replace(CONTROL, ' ')}`).join('\n') + '\n';
}

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** A byte count for a table cell ('-' when there is none). */
export function bytes(n: number | null | undefined): string {
  return formatBytes(n) ?? '-';
}

export function since(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * Shows `label` with a spinner on stderr if `work` takes longer than a second, and only when stderr is a terminal
 * (scripts and pipes get clean output). Resolves with what `work` resolves with.
 */
export async function withProgress<T>(label: string, work: Promise<T>, stream: NodeJS.WriteStream = process.stderr): Promise<T> {
  if (!stream.isTTY) return work;
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let i = 0;
  let shown = false;
  const started = Date.now();
  const draw = (): void => {
    shown = true;
    stream.write(`\r${frames[i++ % frames.length]} ${label} (${Math.round((Date.now() - started) / 1000)} s)\x1b[K`);
  };
  let timer: NodeJS.Timeout | undefined;
  const delay = setTimeout(() => {
    draw();
    timer = setInterval(draw, 100);
  }, 1000);
  try {
    return await work;
  } finally {
    clearTimeout(delay);
    if (timer) clearInterval(timer);
    if (shown) stream.write('\r\x1b[K');
  }
}
