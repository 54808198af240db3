/**
 * What the viewer shows, read from noVNC's own canvas in the page (the remote framebuffer, pixel for pixel) rather
 * than decoded from a screenshot: no image decoder in the tests, no scaling or letterbox bars to account for, and only
 * a few numbers cross from the page to the test. Screenshots are still saved, for people, by the tests themselves.
 */
import type { Page } from 'playwright-core';

/** Share of the canvas's pixels within `tolerance` of each `#rrggbb` colour, by colour. */
export async function canvasShares(page: Page, colours: string[], tolerance = 10): Promise<Record<string, number>> {
  return page.evaluate(({ colours, tolerance }) => {
    const canvas = document.querySelector<HTMLCanvasElement>('#screen canvas');
    const ctx = canvas?.getContext('2d');
    const out: Record<string, number> = {};
    for (const c of colours) out[c] = 0;
    if (!canvas || !ctx || canvas.width === 0 || canvas.height === 0) return out;
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const wanted = colours.map((c) => [parseInt(c.slice(1, 3), 16), parseInt(c.slice(3, 5), 16), parseInt(c.slice(5, 7), 16)] as const);
    const hits = colours.map(() => 0);
    for (let i = 0; i < px.length; i += 4) {
      for (let k = 0; k < wanted.length; k++) {
        const [r, g, b] = wanted[k]!;
        if (Math.abs(px[i]! - r) <= tolerance && Math.abs(px[i + 1]! - g) <= tolerance && Math.abs(px[i + 2]! - b) <= tolerance) hits[k]!++;
      }
    }
    const total = px.length / 4;
    colours.forEach((c, k) => { out[c] = hits[k]! / total; });
    return out;
  }, { colours, tolerance });
}

/** Keeps a copy of the canvas in the page under `name`, for `whiteTurnedDark`. */
export async function keepCanvas(page: Page, name: string): Promise<void> {
  await page.evaluate((name) => {
    const canvas = document.querySelector<HTMLCanvasElement>('#screen canvas');
    const ctx = canvas?.getContext('2d');
    if (!canvas || !ctx) throw new Error('no noVNC canvas on the page');
    const w = window as unknown as { __kept?: Record<string, ImageData> };
    (w.__kept ??= {})[name] = ctx.getImageData(0, 0, canvas.width, canvas.height);
  }, name);
}

/** Pixels that were white in the canvas kept as `name` and are dark now: text drawn on a white terminal. */
export async function whiteTurnedDark(page: Page, name: string): Promise<number> {
  return page.evaluate((name) => {
    const before = (window as unknown as { __kept?: Record<string, ImageData> }).__kept?.[name];
    const canvas = document.querySelector<HTMLCanvasElement>('#screen canvas');
    const ctx = canvas?.getContext('2d');
    if (!before || !canvas || !ctx) return 0;
    if (canvas.width !== before.width || canvas.height !== before.height) return 0;
    const a = before.data;
    const b = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < a.length; i += 4) {
      const wasWhite = a[i]! > 230 && a[i + 1]! > 230 && a[i + 2]! > 230;
      const isDark = b[i]! < 110 && b[i + 1]! < 110 && b[i + 2]! < 110;
      if (wasWhite && isDark) n++;
    }
    return n;
  }, name);
}
