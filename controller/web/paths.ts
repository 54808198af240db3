/**
 * Where the web files live at runtime. tsc does not copy non-TS files into dist/, so the static pages are read from
 * the source tree (controller/web/static/) both when running from dist/controller/web/ and under vitest (which runs
 * the .ts files in place). noVNC is read from the installed `@novnc/novnc` package, never a vendored copy.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of controller/web/static/ (with the viewer and dashboard pages). */
export function staticRoot(): string {
  const candidates = [
    // Running the .ts source in place (vitest, tsx): controller/web/static/ is next to this file.
    new URL('./static/', import.meta.url),
    // Running the compiled dist/controller/web/paths.js: go back to the package root, then into the source tree.
    new URL('../../../controller/web/static/', import.meta.url),
  ];
  for (const url of candidates) {
    const dir = fileURLToPath(url);
    if (existsSync(join(dir, 'viewer', 'index.html'))) return dir;
  }
  throw new Error(`controller/web/static/ not found near ${fileURLToPath(import.meta.url)}`);
}

/** Absolute path of the installed @novnc/novnc package (its `core/` and `vendor/` are served). */
export function novncRoot(): string {
  // The package's only export is ./core/rfb.js, so resolve that and go up one level.
  const rfb = createRequire(import.meta.url).resolve('@novnc/novnc');
  return dirname(dirname(rfb));
}
