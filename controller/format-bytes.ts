/**
 * A byte count for people, in binary units (`512 B`, `1.5 KiB`, `42 MiB`). One home for the CLI's tables
 * (cli/output.ts) and the dashboard's cells (web/static/dashboard/format.js, which esbuild bundles from here).
 */

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB'] as const;

/** `n` bytes as text, or null when `n` is not a count (not a finite number, or negative). */
export function formatBytes(n: unknown): string | null {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) return null;
  if (n < 1024) return `${n} B`;
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < UNITS.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}
