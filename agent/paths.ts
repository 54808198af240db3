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

/** The session run when neither the user's ~/.vnc/xstartup nor the system's /etc/X11/Xvnc-session is usable. */
export const fallbackSessionScript = join(packageRoot, 'agent', 'vnc', 'default-xstartup.sh');

/** The first process of every session (as the user): chooses the session script, see the script's header. */
export const sessionLauncher = join(packageRoot, 'agent', 'vnc', 'session-launcher.sh');

/** The agent's .proto, loaded for server reflection. */
export const protoRoot = join(packageRoot, 'proto');
export const agentProtoFile = 'vncdispatch/agent/v1/agent.proto';
/**
 * The compiled descriptors of every .proto in proto/ and what they import (a FileDescriptorSet made by `buf build`
 * in `npm run generate`): what server reflection serves, with the real file names, dependencies and field names.
 */
export const descriptorSetFile = join(protoRoot, 'descriptors.binpb');
