/**
 * Error codes are part of the API: every code the controller or the agent can report must be documented in
 * README.md, with the HTTP status the controller really uses.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AgentErrorCodes } from '../../agent/errors.js';
import { ERROR_CODES } from '../../controller/errors.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('error codes are documented', () => {
  it.each(Object.entries(ERROR_CODES))('controller %s appears in the README with its HTTP status', (code, [status]) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
    expect(row, `README.md has no table row for ${code}`).toBeDefined();
    expect(row).toMatch(new RegExp(`\\|[^|]*\\b${status}\\b[^|]*\\|`));
  });

  it.each(Object.keys(AgentErrorCodes))('agent %s appears in the README', (code) => {
    expect(readme).toContain(`\`${code}\``);
  });
});
