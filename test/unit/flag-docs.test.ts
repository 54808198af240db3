/**
 * The flags people read about are the flags the daemons take, in both directions: every option in agent/config.ts
 * and controller/config.ts is in its usage text and in README's flag table, and every flag those name exists, with
 * the same default wherever the text states one.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { OPTIONS as AGENT_OPTIONS, USAGE as AGENT_USAGE } from '../../agent/config.js';
import { OPTIONS as CONTROLLER_OPTIONS, USAGE as CONTROLLER_USAGE } from '../../controller/config.js';
import { repoRoot } from '../helpers/node-service.js';

type Options = Record<string, { type: 'string' | 'boolean'; default?: string | boolean | readonly string[] }>;

const README = readFileSync(resolve(repoRoot(), 'README.md'), 'utf8');

/** The README section (`## ...` to the next `## `) whose heading starts with `title`. */
function section(title: string): string {
  const start = README.indexOf(`\n## ${title}`);
  expect(start, `README has no section "${title}"`).toBeGreaterThanOrEqual(0);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

/** Rows of the section's `| Flag | Default | Meaning |` table: the flags of the first cell and the default cell. */
function flagTable(text: string): { flags: string[]; default: string }[] {
  const lines = text.split('\n');
  const head = lines.findIndex((l) => /^\| *Flag *\| *Default *\|/.test(l));
  expect(head, 'no flag table').toBeGreaterThanOrEqual(0);
  const rows: { flags: string[]; default: string }[] = [];
  for (const line of lines.slice(head + 2)) {
    if (!line.startsWith('|')) break;
    const [flagCell = '', defaultCell = ''] = line.split(/(?<!\\)\|/).slice(1).map((c) => c.trim());
    rows.push({ flags: [...flagCell.matchAll(/--[a-z][a-z0-9-]*/g)].map((m) => m[0].slice(2)), default: defaultCell });
  }
  return rows;
}

/** Flags that start a line of the usage text, with the default the line states, if any. */
function usageFlags(usage: string): { flag: string; default: string | null }[] {
  return [...usage.matchAll(/^ {2}--([a-z][a-z0-9-]*)(.*(?:\n {20,}.*)*)/gm)].map((m) => ({
    flag: m[1]!,
    default: /\(default ([^)\s;]+)/.exec(m[2]!)?.[1] ?? null,
  }));
}

function documented(options: Options): string[] {
  return Object.keys(options).filter((f) => f !== 'help').sort();
}

/** What README's default column says for a flag whose default is `value`. */
function readmeDefaultMatches(cell: string, option: Options[string]): boolean | null {
  const value = option.default;
  if (cell === 'off') return value === false || value === undefined;
  if (cell === 'none' || cell === 'required') return value === undefined || (Array.isArray(value) && value.length === 0);
  const literal = /^`([^`]*)`$/.exec(cell);
  // A placeholder (`http://LISTEN`) names what the default follows, not a value.
  if (literal && value === undefined && /[A-Z]{3,}/.test(literal[1]!)) return null;
  if (literal) return String(value) === literal[1];
  return null; // described in words (e.g. "the public URL's origin"): nothing to compare
}

for (const [name, options, usage, readme] of [
  ['agent', AGENT_OPTIONS as Options, AGENT_USAGE, () => section('The agent')],
  ['controller', CONTROLLER_OPTIONS as Options, CONTROLLER_USAGE, () => section('The controller')],
] as const) {
  describe(`${name} flags`, () => {
    it('the usage text lists every flag the config takes, and no other, with the same defaults', () => {
      const lines = usageFlags(usage);
      expect([...new Set(lines.map((l) => l.flag))].sort()).toEqual(documented(options));
      for (const line of lines) {
        const option = options[line.flag]!;
        if (line.default !== null && option.default !== undefined) {
          expect(`--${line.flag} (default ${line.default})`).toBe(`--${line.flag} (default ${String(option.default)})`);
        }
      }
    });

    it("README's flag table lists every flag the config takes, and no other, with the same defaults", () => {
      const rows = flagTable(readme());
      expect([...new Set(rows.flatMap((r) => r.flags))].sort()).toEqual(documented(options));
      const wrong = rows.filter((r) => r.flags.length === 1 && readmeDefaultMatches(r.default, options[r.flags[0]!]!) === false)
        .map((r) => ({ flag: r.flags[0]!, readme: r.default, config: options[r.flags[0]!]!.default }));
      expect(wrong).toEqual([]);
    });
  });
}
