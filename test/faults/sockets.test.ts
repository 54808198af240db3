/**
 * Many proxied sockets moving data at once, with real processes: the controller process, one agent (its mTLS relay)
 * and real Xvnc desktops, each watched by many WebSocket viewers through the proxy. Each viewer gets its own
 * single-use token from POST /api/v1/sessions (a user's live session answers 200 with a fresh token for every
 * viewer), completes both RFB handshakes through the controller, then asks for a 64x64 corner of the screen
 * (non-incremental FramebufferUpdateRequest, Raw at 32 bpp: 16 KiB an answer) once per pace, so every socket keeps
 * moving data while Xvnc's CPU stays bounded.
 *
 * What an operator would notice is asserted: every socket opens (nothing refused, the rig raises the per-IP cap
 * with --max-connections-per-ip, since all viewers share 127.0.0.1), stays open, and keeps receiving (each got at
 * least a quarter of the updates its pace allows: none starves); /healthz answers all along; after the sockets close
 * the controller's open-connection gauge is back to 0, its RSS comes back within 64 MiB (96 in the short run) of the pre-load figure, and
 * the shared invariant holds. The figures (sockets, seconds, MB moved, updates/s, controller CPU and RSS) are
 * printed for docs/RELIABILITY.md, never asserted.
 *
 * Short (npm test): 2 desktops × 50 viewers for 5 s. `npm run test:faults` (VD_FAULTS=full): 5 desktops × 200
 * viewers for 60 s. Users vdtest69, vdtest70, vdtest122..vdtest124.
 */
import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { agentClient, call, endDesktop, startAgent, waitFor, type AgentClient, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { checkInvariants, rssBytes } from '../helpers/invariants.js';
import { cpuSeconds } from '../helpers/process-figures.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';

const FULL = process.env.VD_FAULTS === 'full';
const USERS = (FULL ? [69, 70, 122, 123, 124] : [69, 70]).map(testUser);
const VIEWERS_PER_DESKTOP = FULL ? 200 : 50;
const SOCKETS = USERS.length * VIEWERS_PER_DESKTOP;
const SECONDS = FULL ? 60 : 5;
/** Time between one update's arrival and a socket's next request: bounds the load on Xvnc and on the 2-core rig. */
const PACE_MS = FULL ? 1000 : 250;
/** No socket may get fewer updates than this: a quarter of what its pace allows in the run. */
const MIN_UPDATES = Math.max(2, Math.floor((SECONDS * 1000) / PACE_MS / 4));
/** Viewers opening at once (POST + upgrade + both RFB handshakes), so the handshake timeouts measure the proxy, not the queue. */
const OPEN_CONCURRENCY = 25;
const REGION = 64;
/**
 * How far above its pre-load RSS the controller may stay. The full run holds the 64 MiB the invariant uses:
 * the controller runs on jemalloc, as the product does where libjemalloc2 is installed (controller/allocator.ts);
 * on glibc's malloc it fails, glibc keeping the arena the sockets' TLS connections used (docs/RELIABILITY.md). The
 * short run in CI measured +31 to +52 MiB for 100 sockets on glibc (that retention plus V8's own warm-up), too near
 * 64 on a loaded CI machine, so it allows 96 MiB: a leak of a third of a MiB per socket still fails it.
 */
const RSS_SLACK = (FULL ? 64 : 96) * 1024 * 1024;

let pki: Pki;
let agent: AgentProcess;
let client: AgentClient;
let controller: ControllerProcess;

/** Sum of a metric's samples (all label sets) in the controller's /metrics. */
async function metric(name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${controller.url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) {
    if (!labels || (m[1] ?? '').includes(labels)) sum += Number(m[2]);
  }
  return sum;
}

/** The controller's memory as it sees it: V8 heap in use and allocated, and memory outside the heap (Buffers). */
async function heapFigures(): Promise<string> {
  const mib = async (n: string) => ((await metric(`vncdispatch_controller_nodejs_${n}`)) / 2 ** 20).toFixed(0);
  return `heap ${await mib('heap_size_used_bytes')}/${await mib('heap_size_total_bytes')}, external ${await mib('external_memory_bytes')}`;
}

interface Viewer {
  ws: RfbWsClient;
  updates: number;
  bytes: number;
  /** Why its loop stopped early, if it did. */
  failed?: string;
}

/** Asks for the top-left REGION×REGION corner, non-incremental, and reads the answer through; returns its bytes. */
async function oneUpdate(v: RfbWsClient): Promise<number> {
  const req = Buffer.alloc(10);
  req.writeUInt8(3, 0);
  req.writeUInt16BE(REGION, 6);
  req.writeUInt16BE(REGION, 8);
  v.write(req);
  for (;;) {
    const type = (await v.read(1))[0]!;
    if (type === 2) continue; // Bell: one byte.
    if (type === 3) { // ServerCutText: 3 padding bytes, a length, the text.
      const head = await v.read(7);
      await v.read(head.readUInt32BE(3));
      continue;
    }
    if (type !== 0) throw new Error(`unexpected RFB message type ${type}`);
    const head = await v.read(3);
    let bytes = 4;
    for (let i = 0, n = head.readUInt16BE(1); i < n; i++) {
      const rect = await v.read(12);
      const encoding = rect.readInt32BE(8);
      if (encoding !== 0) throw new Error(`unexpected encoding ${encoding} (no SetEncodings was sent: Raw only)`);
      const size = rect.readUInt16BE(4) * rect.readUInt16BE(6) * 4;
      await v.read(size);
      bytes += 12 + size;
    }
    return bytes;
  }
}

/** A viewer of `username`'s desktop: its own token from POST /api/v1/sessions, then both handshakes through the proxy. */
async function openViewer(username: string): Promise<Viewer> {
  const r = await api(controller, 'POST', '/api/v1/sessions', { username });
  if (r.status !== 200) throw new Error(`POST /api/v1/sessions for ${username}: ${r.status} ${r.text}`);
  const ws = await openWebSocket(`${controller.url.replace('http', 'ws')}${r.body.websocketPath}`);
  if (isRefused(ws)) throw new Error(`upgrade refused: ${ws.status} ${ws.body.error?.code}`);
  await ws.handshakeNone();
  return { ws, updates: 0, bytes: 0 };
}

/** Runs `fn` over `items` with at most `n` at once; results in order, failures as Errors. */
async function bounded<T, R>(items: readonly T[], n: number, fn: (x: T) => Promise<R>): Promise<(R | Error)[]> {
  const out: (R | Error)[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    }
  }));
  return out;
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  client = agentClient(agent.address, pki);
  // Every viewer here comes from 127.0.0.1, so the per-IP cap (default 20) is raised above the socket count: this
  // scenario is about the proxy carrying many sockets, not about one address's share (proxy-admission covers that).
  controller = await startController({ pki, blades: [{ name: 'b1', address: agent.address }],
    args: ['--max-connections-per-ip', String(SOCKETS + 100)] });
  await waitForBladeStates(controller, { b1: 'UP' }, 15_000);
}, 60_000);

afterAll(async () => {
  const sessions = (await call(client, client.listSessions, {}).catch(() => ({ sessions: [] as Session[] }))).sessions;
  for (const s of sessions.filter((x) => USERS.includes(x.username))) await endDesktop(client, s);
  await controller?.stop('SIGKILL').catch(() => {});
  client?.close();
  await agent?.stop().catch(() => {});
  for (const dir of [controller?.dataDir, agent?.stateDir, agent?.runtimeDir]) if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('many proxied sockets', () => {
  it(`${SOCKETS} viewers moving data for ${SECONDS} s all stay open and keep receiving, /healthz answers, and memory comes back`, async () => {
    // The desktops, one per user, small so that Xvnc stays light.
    const started = await Promise.all(USERS.map((username) =>
      api(controller, 'POST', '/api/v1/sessions', { username, geometry: '640x480' })));
    expect(started.map((r) => r.status), JSON.stringify(started.map((r) => r.text))).toEqual(USERS.map(() => 201));
    const pid = controller.pid;
    await expect.poll(() => metric('vncdispatch_proxy_connections_open'), { timeout: 10_000 }).toBe(0);
    const rssBefore = rssBytes(pid)!;
    const bytes0 = await metric('vncdispatch_proxy_bytes_total');
    const heapBefore = await heapFigures();

    // /healthz all through, from its own connection: every answer must be a 200 within 5 s.
    const health: { ok: boolean; ms: number }[] = [];
    let probing = true;
    let rssPeak = rssBefore;
    const prober = (async () => {
      while (probing) {
        const t0 = performance.now();
        const ok = await fetch(`${controller.url}/healthz`, { signal: AbortSignal.timeout(5_000) })
          .then((r) => r.status === 200, () => false);
        health.push({ ok, ms: performance.now() - t0 });
        rssPeak = Math.max(rssPeak, rssBytes(pid) ?? 0);
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    try {
      // Open every viewer (a bounded number at a time).
      const tOpen = performance.now();
      const owners = USERS.flatMap((u) => Array.from({ length: VIEWERS_PER_DESKTOP }, () => u));
      const opened = await bounded(owners, OPEN_CONCURRENCY, openViewer);
      const openSeconds = (performance.now() - tOpen) / 1000;
      const viewers = opened.filter((v): v is Viewer => !(v instanceof Error));
      const refused = opened.filter((v): v is Error => v instanceof Error).map((e) => e.message);
      try {
        expect(refused.slice(0, 10), `${refused.length} of ${SOCKETS} viewers could not open`).toEqual([]);
        expect(await metric('vncdispatch_proxy_connections_open')).toBe(SOCKETS);

        // Move data: each viewer asks, reads, waits its pace, until the run's end.
        const cpu0 = cpuSeconds(pid);
        const t0 = performance.now();
        const end = Date.now() + SECONDS * 1000;
        // A request the desktop never answers would hold its loop forever: 15 s after the end, such a socket is
        // closed and counted as broken.
        const busy = new Set<Viewer>(viewers);
        const guard = setTimeout(() => {
          for (const v of busy) {
            v.failed ??= 'no answer to its last request within 15 s of the end';
            v.ws.close();
          }
        }, SECONDS * 1000 + 15_000);
        await Promise.all(viewers.map(async (v) => {
          try {
            while (Date.now() < end) {
              v.bytes += await oneUpdate(v.ws);
              v.updates++;
              await new Promise((r) => setTimeout(r, Math.min(PACE_MS, Math.max(0, end - Date.now()))));
            }
          } catch (err) {
            v.failed ??= (err as Error).message;
          } finally {
            busy.delete(v);
          }
        }));
        clearTimeout(guard);
        const seconds = (performance.now() - t0) / 1000;
        const cpu = (cpuSeconds(pid) - cpu0) / seconds;
        const bytesMoved = (await metric('vncdispatch_proxy_bytes_total')) - bytes0;
        const updates = viewers.reduce((a, v) => a + v.updates, 0);
        const received = viewers.reduce((a, v) => a + v.bytes, 0);
        const counts = viewers.map((v) => v.updates).sort((a, b) => a - b);
        const closedEarly = viewers.filter((v) => v.ws.closed || v.failed);
        const heapLoaded = await heapFigures();

        // Close every socket, then the gauge and memory must come back.
        for (const v of viewers) v.ws.close();
        await expect.poll(() => metric('vncdispatch_proxy_connections_open'), { timeout: 30_000 }).toBe(0);
        await waitFor(() => (rssBytes(pid) ?? Infinity) <= rssBefore + RSS_SLACK,
          `controller RSS back within ${RSS_SLACK >> 20} MiB of ${rssBefore >> 20} MiB`, 30_000).catch(() => {});
        const rssAfter = rssBytes(pid)!;
        const heapAfter = await heapFigures();
        probing = false;
        await prober;
        const healthMs = health.map((h) => h.ms).sort((a, b) => a - b);

        console.log(`[figures] ${SOCKETS} proxied sockets (${USERS.length} desktops × ${VIEWERS_PER_DESKTOP} viewers, `
          + `64x64 Raw every ${PACE_MS} ms) for ${seconds.toFixed(1)} s: opened in ${openSeconds.toFixed(1)} s; `
          + `${(bytesMoved / 1e6).toFixed(1)} MB moved through the proxy (${(bytesMoved / 1e6 / seconds).toFixed(2)} MB/s; `
          + `${(received / 1e6).toFixed(1)} MB of updates read by the viewers), `
          + `${updates} updates (${(updates / seconds).toFixed(0)}/s), per socket min ${counts[0]} / median `
          + `${counts[counts.length >> 1]} / max ${counts[counts.length - 1]} (bound ≥ ${MIN_UPDATES}); controller CPU `
          + `${(cpu * 100).toFixed(1)} % of one core, RSS before ${(rssBefore / 2 ** 20).toFixed(0)} / peak `
          + `${(rssPeak / 2 ** 20).toFixed(0)} / after ${(rssAfter / 2 ** 20).toFixed(0)} MiB (MiB, `
          + `before: ${heapBefore}; loaded: ${heapLoaded}; after: ${heapAfter}); /healthz ${health.length} `
          + `probes, ${health.filter((h) => !h.ok).length} failed, max ${healthMs[healthMs.length - 1]?.toFixed(0)} ms; `
          + `load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);

        expect(closedEarly.map((v) => v.failed ?? `closed ${v.ws.closed?.code} ${v.ws.closed?.reason}`).slice(0, 10),
          `${closedEarly.length} sockets closed or broke during the run`).toEqual([]);
        expect(counts[0], 'updates on the most starved socket').toBeGreaterThanOrEqual(MIN_UPDATES);
        expect(health.filter((h) => !h.ok).length, '/healthz probes that failed or took over 5 s').toBe(0);
        expect(rssAfter, 'controller RSS after the sockets closed').toBeLessThanOrEqual(rssBefore + RSS_SLACK);
      } finally {
        for (const v of viewers) v.ws.close();
      }
    } finally {
      probing = false;
      await prober;
    }
    await checkInvariants({ controller, users: USERS, dataDir: controller.dataDir, rss: { pid, baseline: rssBefore },
      rssSlackBytes: RSS_SLACK });
  }, FULL ? 600_000 : 90_000);
});
