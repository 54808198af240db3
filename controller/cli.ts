#!/usr/bin/env node
/**
 * `vncdispatch`: operator commands.
 *   vncdispatch status | sessions ... | blades ...     against a controller's REST API (controller/cli/commands.ts)
 *   vncdispatch up [--user NAME [--create-user]] [--port 8080] [--agent-port 7443] [--dir DIR] [--runtime-dir DIR]
 *   vncdispatch pki ca DIR | pki agent DIR NAME HOST... | pki controller DIR [NAME]
 */
import { CliError, EXIT } from './cli/client.js';
import { OPS_COMMANDS, OPS_USAGE } from './cli/commands.js';
import { ensureCa, issueCert } from './cli/pki.js';
import { up, UP_USAGE } from './cli/up.js';

const USAGE = `usage:
${OPS_USAGE}
local system and certificates:
${UP_USAGE}  vncdispatch pki ca DIR                      create DIR/ca.crt and DIR/ca.key
  vncdispatch pki agent DIR NAME HOST...      issue DIR/NAME.crt for an agent reachable as HOST (names or IPs)
  vncdispatch pki controller DIR [NAME]       issue DIR/NAME.crt (default: controller) for the controller
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return EXIT.ok;
  }
  const ops = cmd ? OPS_COMMANDS.get(cmd) : undefined;
  if (ops) return ops(rest, process.env, process.stdout);
  if (cmd === 'up') return up(rest);
  if (cmd === 'pki') {
    const [what, dir, ...args] = rest;
    if (what === 'ca' && dir && args.length === 0) {
      process.stdout.write(`${ensureCa(dir)}\n`);
      return EXIT.ok;
    }
    if (what === 'agent' && dir && args.length >= 2) {
      const [name, ...hosts] = args;
      process.stdout.write(`${issueCert(dir, name!, hosts, 'serverAuth').cert}\n`);
      return EXIT.ok;
    }
    if (what === 'controller' && dir && args.length <= 1) {
      process.stdout.write(`${issueCert(dir, args[0] ?? 'controller', [], 'clientAuth').cert}\n`);
      return EXIT.ok;
    }
  }
  process.stderr.write(USAGE);
  return EXIT.usage;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vncdispatch: ${err instanceof Error ? err.message : String(err)}\n`);
    if (err instanceof CliError && err.exitCode === EXIT.usage) process.stderr.write('run `vncdispatch help` for usage\n');
    process.exitCode = err instanceof CliError ? err.exitCode : EXIT.failure;
  },
);
