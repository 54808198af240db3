// Formatting for the dashboard's cells. Every function returns plain text (or null for "nothing to show").
// Byte counts are formatted by the same code as the CLI's (esbuild bundles it from the TypeScript source).
import { formatBytes } from '../../../format-bytes.ts';

export function toDate(value) {
  if (value === null || value === undefined) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function ago(value) {
  const d = toDate(value);
  return d ? `${duration(Date.now() - d.getTime())} ago` : null;
}

export function age(value) {
  const d = toDate(value);
  return d ? duration(Date.now() - d.getTime()) : null;
}

export function time(value) {
  const d = toDate(value);
  return d ? d.toLocaleString() : null;
}

export function bytes(n) {
  return formatBytes(n);
}

export function memory(blade) {
  const m = blade && blade.memory;
  if (!m || typeof m.totalBytes !== 'number' || typeof m.availableBytes !== 'number') return null;
  return `${bytes(m.totalBytes - m.availableBytes)} / ${bytes(m.totalBytes)}`;
}

export function load(blade) {
  const l = blade && blade.load;
  if (!l || typeof l.load1 !== 'number') return null;
  return [l.load1, l.load5, l.load15].map((x) => (typeof x === 'number' ? x.toFixed(2) : '?')).join(' ');
}
