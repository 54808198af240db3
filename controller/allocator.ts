/**
 * Which malloc the controller runs on. Each proxied socket holds native memory (OpenSSL's state and record buffers
 * of its relay connection, the sockets' read buffers: about 160 KiB per busy socket). glibc's malloc frees it into
 * its main arena and keeps it there after the sockets close, as small free chunks that only malloc_trim(3) gives back,
 * so a controller that once carried 1,000 viewers held about 150 MiB more for good. Debian's jemalloc (libjemalloc2)
 * returns such memory to the kernel a few seconds after it is freed (docs/RELIABILITY.md has the figures), so the
 * controller runs on it wherever it is installed: the systemd unit preloads it, and so do `vncdispatch up` and the
 * test rig, through this module. Without the package the controller runs on glibc's malloc, as before.
 */
import { existsSync } from 'node:fs';

/** The library's name; ld.so finds it on its own search path when preloaded by name (the systemd unit does that). */
export const JEMALLOC_SONAME = 'libjemalloc.so.2';

/** Where Debian's libjemalloc2 puts it, by architecture. */
const LIBRARY_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'];

/**
 * jemalloc's own settings: a background thread purges freed pages on time, even when the controller allocates
 * nothing more (without it, purging waits for the next allocations).
 */
export const JEMALLOC_CONF = 'background_thread:true';

/** The installed jemalloc's path, or null. */
export function jemallocPath(): string | null {
  for (const dir of LIBRARY_DIRS) {
    const path = `${dir}/${JEMALLOC_SONAME}`;
    if (existsSync(path)) return path;
  }
  return null;
}

/**
 * The environment additions that run a controller process on jemalloc when it is installed: LD_PRELOAD (after any
 * the caller already preloads) and MALLOC_CONF (unless set). Empty without the package.
 */
export function controllerAllocatorEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const lib = jemallocPath();
  if (!lib) return {};
  const preload = env.LD_PRELOAD ? `${env.LD_PRELOAD} ${lib}` : lib;
  return { LD_PRELOAD: preload, MALLOC_CONF: env.MALLOC_CONF ?? JEMALLOC_CONF };
}
