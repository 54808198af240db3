/** Locates files shipped with the package, so the same code works from the sources and from dist/. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(start: string): string {
  let dir = start;
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string };
      if (pkg.name === 'vncdispatch') return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the vncdispatch package root');
    dir = parent;
  }
}

/** The directory holding the vncdispatch package.json (the repo root or the installed package). */
export const packageRoot = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

/** The package version, reported by GetStatus. */
export const agentVersion = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string })
  .version;

/** The session script used when a user has no executable ~/.vnc/xstartup. */
export const defaultSessionScript = join(packageRoot, 'agent', 'vnc', 'default-xstartup.sh');

/** The agent's .proto, loaded for server reflection. */
export const protoRoot = join(packageRoot, 'proto');
export const agentProtoFile = 'vncdispatch/agent/v1/agent.proto';
