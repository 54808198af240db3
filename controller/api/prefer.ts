/**
 * The one RFC 7240 preference the API honours. A Prefer header is a comma-separated list of `token[=value]` items
 * with optional `;param` parts; unknown preferences are ignored, as the RFC asks, and anything malformed is simply
 * not `respond-async`.
 */
export function prefersRespondAsync(header: string | string[] | undefined): boolean {
  if (header === undefined) return false;
  const values = Array.isArray(header) ? header : [header];
  for (const value of values) {
    for (const item of value.split(',')) {
      const name = item.split(/[=;]/, 1)[0]!.trim().toLowerCase();
      if (name === 'respond-async') return true;
    }
  }
  return false;
}
