/**
 * Builds the browser pages (`npm run build` runs this after tsc): every folder of controller/web/static/ is a page
 * whose index.html names its scripts and styles by relative URL (`<script type="module" src="viewer.js">`,
 * `<link rel="stylesheet" href="viewer.css">`). Each such file is an esbuild entry point, noVNC and any other import
 * bundled in. The output, in dist/web/:
 *
 * - `assets/NAME-HASH.js|css` (and shared or lazily imported `chunk-HASH.js`): content-hashed, so the server can
 *   mark them immutable; a new build gets new names, never a stale cache.
 * - `PAGE/index.html`: the page with its references rewritten to `../assets/…`, and a `modulepreload` for every chunk
 *   an entry imports, so the browser fetches them in parallel with the entry instead of one after the other. A
 *   classic script marked `<script src="x.js" data-inline></script>` is minified into the page instead: it runs
 *   while the page is parsed, before any module is fetched (the viewer opens its WebSocket there).
 * - `inline-script-hashes.json`: the CSP source (`'sha256-…'`) of every inlined script, which the server adds to
 *   `script-src`, so the policy still allows no other inline script.
 * - next to every text file, a `.br` (brotli, best) and a `.gz` (gzip -9) copy the server picks by Accept-Encoding.
 *
 * Why esbuild: it is already the project's dev dependency, bundles ES modules with code splitting and content hashes
 * in one call, and takes ~100 ms, so no second bundler or configuration language is needed. A new page needs no
 * change here: add a folder with an index.html.
 */
import { createHash } from 'node:crypto';
import { brotliCompressSync, constants as zlibConstants, gzipSync } from 'node:zlib';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build, transform, type Metafile, type Plugin } from 'esbuild';
import { INLINE_HASHES_FILE } from './paths.js';

/** Browsers the pages are built for (they already need ES modules, WebSockets and ResizeObserver). */
const TARGETS = ['chrome100', 'firefox100', 'safari15.4', 'edge100'];

/** Text files worth compressing (everything the build writes except source maps, which only developers fetch). */
const COMPRESSIBLE = /\.(?:html|js|css|svg|json|txt)$/;

/**
 * noVNC's util/browser.js probes H.264 decoding with a top-level `await` (it starts a VideoDecoder and decodes a test
 * frame) before any module that imports it runs: the viewer could not start its RFB handshake until the probe ends.
 * TigerVNC's Xvnc sends no H.264, so the probe is replaced by `false` (noVNC then does not offer H.264). The build
 * fails if the line is gone, so a noVNC upgrade is looked at rather than silently changed.
 */
const H264_PROBE = 'supportsWebCodecsH264Decode = await _checkWebCodecsH264DecodeSupport();';
const noH264Probe: Plugin = {
  name: 'novnc-no-h264-probe',
  setup(b) {
    b.onLoad({ filter: /[\\/]@novnc[\\/]novnc[\\/]core[\\/]util[\\/]browser\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      if (!source.includes(H264_PROBE)) {
        return { errors: [{ text: `noVNC changed: "${H264_PROBE}" not found in ${args.path}; review controller/web/bundle.ts` }] };
      }
      return { contents: source.replace(H264_PROBE, 'supportsWebCodecsH264Decode = false;'), loader: 'js' };
    });
  },
};

export interface BundleOptions {
  /** Folder of page folders (controller/web/static/). */
  srcDir: string;
  /** Output folder, emptied first (dist/web/). */
  outDir: string;
}

export interface BundleResult {
  pages: string[];
  /** Every file written, relative to outDir. */
  files: string[];
}

/** A classic script to inline: `<script src="x.js" data-inline></script>`, naming a file in the page's folder. */
const INLINE_SCRIPT = /<script src="([a-z0-9][a-z0-9._-]*\.js)" data-inline><\/script>/g;

/** Relative script and style references of a page: `src="x.js"` / `href="x.css"` naming a file in its folder. */
const LOCAL_REF = /\b(src|href)="([a-z0-9][a-z0-9._-]*\.(?:js|css))"/g;

/** Bundles every page of `srcDir` into `outDir`. */
export async function bundlePages(opts: BundleOptions): Promise<BundleResult> {
  const pages = readdirSync(opts.srcDir).filter((d) => existsSync(join(opts.srcDir, d, 'index.html'))).sort();
  rmSync(opts.outDir, { recursive: true, force: true });
  const assetsDir = join(opts.outDir, 'assets');
  mkdirSync(assetsDir, { recursive: true });

  const entries = new Map<string, string>(); // absolute source path → its page-relative name
  const html = new Map<string, string>();
  const inlineHashes = new Set<string>();
  for (const page of pages) {
    const text = await inlineScripts(readFileSync(join(opts.srcDir, page, 'index.html'), 'utf8'), join(opts.srcDir, page), inlineHashes);
    html.set(page, text);
    for (const m of text.matchAll(LOCAL_REF)) entries.set(join(opts.srcDir, page, m[2]!), m[2]!);
  }

  const result = await build({
    entryPoints: [...entries.keys()],
    absWorkingDir: opts.srcDir,
    bundle: true,
    splitting: true,
    format: 'esm',
    target: TARGETS,
    minify: true,
    sourcemap: 'linked',
    legalComments: 'eof',
    outdir: assetsDir,
    entryNames: '[name]-[hash]',
    chunkNames: 'chunk-[hash]',
    assetNames: '[name]-[hash]',
    metafile: true,
    logLevel: 'warning',
    plugins: [noH264Probe],
  });

  // Source entry (absolute) → output path relative to dist/web/assets, and the chunks each entry imports.
  const outputs = new Map<string, { file: string; chunks: string[] }>();
  const meta: Metafile = result.metafile;
  for (const [out, info] of Object.entries(meta.outputs)) {
    if (!info.entryPoint) continue;
    const source = join(opts.srcDir, info.entryPoint);
    const chunks = info.imports.filter((i) => !i.external && i.path.endsWith('.js')).map((i) => basename(i.path));
    outputs.set(source, { file: basename(out), chunks });
  }

  for (const page of pages) {
    const preloads = new Set<string>();
    const rewritten = html.get(page)!.replace(LOCAL_REF, (_whole, attr: string, name: string) => {
      const out = outputs.get(join(opts.srcDir, page, name));
      if (!out) throw new Error(`bundle: ${page}/index.html refers to ${name}, which was not built`);
      for (const c of out.chunks) preloads.add(c);
      return `${attr}="../assets/${out.file}"`;
    });
    const links = [...preloads].map((c) => `  <link rel="modulepreload" href="../assets/${c}">\n`).join('');
    mkdirSync(join(opts.outDir, page), { recursive: true });
    writeFileSync(join(opts.outDir, page, 'index.html'), rewritten.replace('</head>', `${links}</head>`));
  }

  writeFileSync(join(opts.outDir, INLINE_HASHES_FILE), `${JSON.stringify([...inlineHashes].sort())}\n`);

  const files = listFiles(opts.outDir);
  for (const file of files) {
    if (!COMPRESSIBLE.test(file)) continue;
    const data = readFileSync(join(opts.outDir, file));
    writeFileSync(join(opts.outDir, `${file}.br`), brotliCompressSync(data, {
      params: { [zlibConstants.BROTLI_PARAM_QUALITY]: zlibConstants.BROTLI_MAX_QUALITY, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: data.length },
    }));
    writeFileSync(join(opts.outDir, `${file}.gz`), gzipSync(data, { level: 9 }));
  }
  return { pages, files: listFiles(opts.outDir) };
}

/** Replaces each `data-inline` script of a page with its minified text, adding its CSP hash to `hashes`. */
async function inlineScripts(page: string, dir: string, hashes: Set<string>): Promise<string> {
  const found = [...page.matchAll(INLINE_SCRIPT)];
  let out = page;
  for (const [tag, name] of found) {
    const { code } = await transform(readFileSync(join(dir, name!), 'utf8'), { minify: true, target: TARGETS, loader: 'js' });
    const text = code.trim();
    if (/<\/script/i.test(text)) throw new Error(`bundle: ${name} cannot be inlined: it contains "</script"`);
    hashes.add(`'sha256-${createHash('sha256').update(text).digest('base64')}'`);
    out = out.replace(tag, () => `<script>${text}</script>`);
  }
  return out;
}

function listFiles(dir: string, root = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listFiles(path, root));
    else out.push(relative(root, path));
  }
  return out.sort();
}

// `node dist/controller/web/bundle.js`: run by `npm run build` from the package root.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  const { pages, files } = await bundlePages({ srcDir: join(root, 'controller/web/static'), outDir: join(root, 'dist/web') });
  console.log(`bundle: ${pages.join(', ')} → dist/web (${files.length} files)`);
}
