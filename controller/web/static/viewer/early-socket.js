// Inlined into the viewer page's <head> at build time (a classic script, allowed by its hash in the page's CSP):
// it opens the desktop's WebSocket while the browser is still parsing the page, before any module is fetched. The
// WebSocket handshake and the controller's connection to the desktop then overlap with loading the viewer and noVNC,
// instead of following them. viewer.js adopts this socket (and what arrived on it) for its first connection, and
// opens its own when there is none: no token in the address, a browser that refused the URL.
(() => {
  try {
    const token = new URLSearchParams(location.hash.slice(1)).get('token');
    if (!token) return;
    const url = new URL(`../websockify?token=${encodeURIComponent(token)}`, location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url.href);
    ws.binaryType = 'arraybuffer';
    const early = { url: url.href, ws, messages: [], close: null, keep: null };
    early.keep = (e) => early.messages.push(e.data);
    ws.addEventListener('message', early.keep);
    ws.addEventListener('close', (e) => {
      early.close = e;
    });
    window.vdEarlySocket = early;
  } catch {
    // viewer.js opens the socket itself.
  }
})();
