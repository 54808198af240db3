/**
 * Where the built pages live at runtime. `npm run build` bundles controller/web/static/ into dist/web/ (see
 * bundle.ts); the controller serves only that output, found both from the compiled dist/controller/web/paths.js and
 * from this .ts file run in place (vitest).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The file in dist/web/ listing the CSP hash source (`'sha256-…'`) of every script the build inlined into a page. */
export const INLINE_HASHES_FILE = 'inline-script-hashes.json';

/** Absolute path of dist/web/ (page folders with index.html, and assets/). Throws if the pages were never built. */
export function webRoot(): string {
  const candidates = [
    // The compiled dist/controller/web/paths.js: dist/web/ is two folders up.
    new URL('../../web/', import.meta.url),
    // This file run in place (controller/web/paths.ts): the package root's dist/web/.
    new URL('../../dist/web/', import.meta.url),
  ];
  for (const url of candidates) {
    const dir = fileURLToPath(url);
    if (existsSync(join(dir, 'viewer', 'index.html'))) return dir;
  }
  throw new Error(`the web pages are not built (no dist/web/viewer/index.html near ${fileURLToPath(import.meta.url)}): run npm run build`);
}
