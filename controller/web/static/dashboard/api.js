// The dashboard's only door to the controller: JSON requests and the server-sent event stream, both with the API
// key in the Authorization header (never in a URL), both relative to /dashboard/ so a path prefix keeps working.

export class Unauthorized extends Error {}

/** An error answer of the REST API: `code` is the stable VD_ERR_… code, `message` the server's explanation. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorFrom(res) {
  let code = `HTTP_${res.status}`;
  let message = res.statusText || 'request failed';
  try {
    const body = await res.json();
    if (body && body.error && typeof body.error.code === 'string') code = body.error.code;
    if (body && body.error && typeof body.error.message === 'string') message = body.error.message;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(res.status, code, message);
}

/** Calls the REST API; resolves with the JSON body, rejects with Unauthorized or ApiError. */
export async function request(key, method, path, body) {
  const headers = { authorization: `Bearer ${key}`, accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`../api/v1/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) throw await errorFrom(res);
  return res.status === 204 ? null : res.json();
}

/**
 * Reads GET /api/v1/events until it ends or `signal` aborts, calling onEvent(type, data) for each event. fetch, not
 * EventSource: EventSource cannot send an Authorization header, and a key in the URL would reach logs.
 */
export async function streamEvents(key, signal, onEvent) {
  const res = await fetch('../api/v1/events', {
    headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' },
    cache: 'no-store',
    credentials: 'omit',
    signal,
  });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok || !res.body) throw await errorFrom(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) type = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length === 0) continue;
      let parsed;
      try {
        parsed = JSON.parse(data.join('\n'));
      } catch {
        continue;
      }
      onEvent(type, parsed);
    }
  }
}
