/**
 * A blade cut off from its controller, for real: its agent runs in a network namespace of its own, joined to the
 * controller's by a veth pair (test/helpers/netns.ts), with a second agent on loopback as the healthy blade.
 *   - Link down under a user's desktop: the blade goes DOWN, other users are placed on the healthy blade, the user
 *     whose desktop is behind the cut gets 503 VD_ERR_BLADE_DOWN (no token), nothing is duplicated; with the link
 *     back the blade is UP and the same desktop is served through the proxy.
 *   - Packet loss (nftables drop rules in the namespace; this kernel has no `tc netem`): light random loss while
 *     starts and probes run does not make the blade flap DOWN; a start caught by a total drop of the agent's port,
 *     or whose answer alone is dropped, answers 503 and leaves no desktop behind once the packets flow again.
 *   - Link down while a start runs on the blade (its Xvnc is up, its answer not yet sent): the blade is DOWN while
 *     that start is still waiting for its answer, as a silent blade with no start would be; the POST gets a clear
 *     503 (or, with the healthy blade open, its desktop there), and once the link is back the desktop the cut-off
 *     blade finished for nobody is stopped: one desktop per user, none the store does not know.
 * Each ends with the invariant check. Users vdtest111..vdtest115 and vdtest125..vdtest127. `npm run test:faults` (VD_FAULTS=full) holds the
 * link down and the loss for longer.
 */
import { readlinkSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { issueCert } from '../../controller/cli/pki.js';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates, xvncPidsOf, type Json } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { checkInvariants } from '../helpers/invariants.js';
import { createBladeNetns, type BladeNetns } from '../helpers/netns.js';
import { isRefused, openWebSocket } from '../helpers/rfb-ws-client.js';
import { idsOf, testUser } from '../helpers/users.js';

const FULL = process.env.VD_FAULTS === 'full';
const USERS = [111, 112, 113, 114, 115, 125, 126, 127].map(testUser);
/** How long the link stays down, and how long light loss runs, beyond what the scenario waits for anyway. */
const LINK_DOWN_EXTRA_MS = FULL ? 40_000 : 2_000;
const LOSS_MS = FULL ? 60_000 : 8_000;
/**
 * How long the cut-off blade's agent waits, after a desktop's session script has started, before it answers the
 * start (its --start-settle-ms): the window in which the test takes the link down under a start it has seen reach
 * Xvnc, so the start is certainly still unanswered when the link goes.
 */
const CUT_START_SETTLE_MS = 1500;
/** "Light" loss: each packet to or from the agent's port is dropped with this probability, both ways. */
const LOSS_PERCENT = 10;

let pki: Pki;
let netns: BladeNetns | undefined;
let cut: AgentProcess | undefined;
let healthy: AgentProcess | undefined;
let c: ControllerProcess | undefined;

/** The namespaced blade is `cut`, the loopback one `lo`. */
const CUT = 'cut';
const LO = 'lo';

function ctl(): ControllerProcess {
  if (!c) throw new Error('controller not started');
  return c;
}

/** Epoch ms of each `blade STATE` transition the controller logged for `blade` (its log lines are the events). */
function transitions(blade: string, to: 'UP' | 'DOWN'): number[] {
  const out: number[] = [];
  for (const line of ctl().logs) {
    if (!line.includes(`"blade ${to}"`)) continue;
    try {
      const rec = JSON.parse(line) as { blade?: string; msg?: string; time?: number };
      if (rec.blade === blade && rec.msg === `blade ${to}` && typeof rec.time === 'number') out.push(rec.time);
    } catch {
      // not a log record
    }
  }
  return out;
}

/** Waits for the controller to log `blade` going to `to` at or after `since`; resolves with that moment. */
async function nextTransition(blade: string, to: 'UP' | 'DOWN', since: number, timeoutMs: number): Promise<number> {
  let at: number | undefined;
  await expect.poll(() => (at = transitions(blade, to).find((t) => t >= since)), { timeout: timeoutMs, interval: 100 })
    .toBeDefined();
  return at!;
}

function desktopsOf(username: string): number {
  return xvncPidsOf(new Set([idsOf(username).uid])).length;
}

/** The user's desktops (Xvnc) running on the cut-off blade: those in its agent's network namespace. */
function desktopsOnCut(username: string): number {
  const ns = (pid: number) => {
    try {
      return readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      return null; // gone meanwhile
    }
  };
  const cutNs = ns(cut!.pid);
  return xvncPidsOf(new Set([idsOf(username).uid])).filter((pid) => ns(pid) === cutNs).length;
}

/**
 * Sends a POST for `username` and resolves once its start runs on the cut-off blade: the row names that blade and
 * the user's Xvnc is up in its namespace, so the agent is inside StartSession (it answers CUT_START_SETTLE_MS after
 * the session starts at the earliest). `answered()` tells whether the POST has had its answer yet.
 */
async function startInFlightOnCut(username: string): Promise<{ answer: Promise<Json>; answered: () => boolean }> {
  let done = false;
  const answer = api(ctl(), 'POST', '/api/v1/sessions', { username });
  void answer.finally(() => { done = true; }).catch(() => undefined);
  await expect.poll(async () => {
    const rows = (await api(ctl(), 'GET', `/api/v1/sessions?state=live&user=${username}`)).body?.sessions ?? [];
    return rows.length === 1 && rows[0].blade === CUT && desktopsOnCut(username) === 1;
  }, { timeout: 30_000, interval: 20 }).toBe(true);
  return { answer, answered: () => done };
}

/**
 * Starts a POST for `username` on the cut-off blade, cuts its link while that start is in flight, and waits for the
 * blade to go DOWN and the POST to be answered. `answeredBeforeDown` says whether the answer came first.
 */
async function cutDuringStart(username: string): Promise<{ cutAt: number; downAt: number; answeredBeforeDown: boolean; answer: Json }> {
  const start = await startInFlightOnCut(username);
  const cutAt = Date.now();
  netns!.setLink(false);
  expect(start.answered(), 'the start answered before the link went down').toBe(false);
  const downAt = await nextTransition(CUT, 'DOWN', cutAt, 30_000);
  const answeredBeforeDown = start.answered();
  return { cutAt, downAt, answeredBeforeDown, answer: await start.answer };
}

/** The proxy serves the desktop: a WebSocket with a fresh token (websocketPath carries it) completes the RFB handshake and gets a framebuffer. */
async function viewerHandshake(websocketPath: string): Promise<{ width: number; height: number }> {
  const ws = await openWebSocket(`${ctl().url.replace('http:', 'ws:')}${websocketPath}`, { origin: ctl().url });
  if (isRefused(ws)) throw new Error(`viewer refused: ${ws.status} ${JSON.stringify(ws.body)}`);
  try {
    return await ws.handshakeNone();
  } finally {
    ws.close();
  }
}

async function placeOn(blade: string, username: string): Promise<{ id: string; token: string; websocketPath: string }> {
  const other = blade === CUT ? LO : CUT;
  expect((await api(ctl(), 'POST', `/api/v1/blades/${other}/cordon`)).status).toBe(200);
  try {
    const r = await api(ctl(), 'POST', '/api/v1/sessions', { username });
    expect(r.status, r.text).toBe(201);
    expect(r.body.blade).toBe(blade);
    return r.body;
  } finally {
    expect((await api(ctl(), 'POST', `/api/v1/blades/${other}/uncordon`)).status).toBe(200);
  }
}

beforeAll(async () => {
  pki = makePki();
  netns = createBladeNetns();
  // The agent's certificate must name the address the controller dials (it is checked against it); `localhost` is
  // for the test's own agent client, which verifies every test agent under that name.
  const nsCert = issueCert(pki.dir, 'cut-blade', ['localhost', netns.bladeIp], 'serverAuth', 2);
  cut = await startAgent({
    pki: { ...pki, serverCert: nsCert.cert, serverKey: nsCert.key },
    prefix: netns.exec, args: ['--listen', `${netns.bladeIp}:0`, '--start-settle-ms', String(CUT_START_SETTLE_MS)],
  });
  healthy = await startAgent({ pki });
  c = await startController({
    pki, timeoutMs: 60_000,
    blades: [{ name: CUT, address: cut.address }, { name: LO, address: healthy.address }],
    args: ['--reconcile-interval-ms', '1000', '--orphan-grace-ms', '1000'],
  });
  await waitForBladeStates(c, { [CUT]: 'UP', [LO]: 'UP' }, 20_000);
}, 120_000);

afterEach(async () => {
  netns?.clearDrops();
  try {
    netns?.setLink(true);
  } catch {
    // The namespace may not exist (beforeAll failed).
  }
  if (!c) return;
  const live = (await api(c, 'GET', '/api/v1/sessions?state=live&limit=1000').catch(() => null))?.body?.sessions ?? [];
  for (const s of live as { id: string }[]) await api(c, 'DELETE', `/api/v1/sessions/${s.id}`).catch(() => {});
  // The next test starts from two blades UP and open, whatever this one left (a failure may leave a cordon, and a
  // cut-off blade needs a moment to reconnect).
  for (const b of [CUT, LO]) await api(c, 'POST', `/api/v1/blades/${b}/uncordon`).catch(() => {});
  await waitForBladeStates(c, { [CUT]: 'UP', [LO]: 'UP' }, 60_000).catch(() => {});
}, 90_000);

afterAll(async () => {
  await c?.stop('SIGKILL').catch(() => {});
  for (const a of [cut, healthy]) {
    if (!a) continue;
    const client = agentClient(a.address, pki);
    // Whatever a failed test left: stop it through the agent, or kill its Xvnc.
    const left = await call(client, client.listSessions, {}, 3000).catch(() => ({ sessions: [] }));
    for (const s of left.sessions) if (USERS.includes(s.username)) await endDesktop(client, s);
    client.close();
    await a.stop().catch(() => {});
  }
  netns?.remove();
}, 60_000);

describe('a blade partitioned from its controller', () => {
  it('link down: the blade goes DOWN, its user gets 503 VD_ERR_BLADE_DOWN, others land on the healthy blade; link up: the same desktop is served', async () => {
    const [alice, bob] = [USERS[0]!, USERS[1]!];
    const desk = await placeOn(CUT, alice);

    const cutAt = Date.now();
    netns!.setLink(false);
    const downAt = await nextTransition(CUT, 'DOWN', cutAt, 15_000);
    console.log(`[figures] link down: blade DOWN ${downAt - cutAt} ms after the cut (--down-after-ms 2500)`);

    // Another user is placed on the healthy blade.
    const other = await api(ctl(), 'POST', '/api/v1/sessions', { username: bob });
    expect(other.status, other.text).toBe(201);
    expect(other.body.blade).toBe(LO);
    // The user behind the cut is told so, and gets no token for a desktop nobody can reach.
    const refused = await api(ctl(), 'POST', '/api/v1/sessions', { username: alice });
    expect(refused.status, refused.text).toBe(503);
    expect(refused.body.error.code).toBe('VD_ERR_BLADE_DOWN');
    expect(refused.text).not.toContain('token');
    // Nothing was started twice: one desktop each.
    expect([desktopsOf(alice), desktopsOf(bob)]).toEqual([1, 1]);
    const alices = (await api(ctl(), 'GET', `/api/v1/sessions?state=live&user=${alice}`)).body.sessions as { id: string }[];
    expect(alices.map((s) => s.id)).toEqual([desk.id]);

    await new Promise((r) => setTimeout(r, LINK_DOWN_EXTRA_MS));
    const restoredAt = Date.now();
    netns!.setLink(true);
    const upAt = await nextTransition(CUT, 'UP', restoredAt, 30_000);
    console.log(`[figures] link up: blade UP ${upAt - restoredAt} ms after the link came back (down for ${restoredAt - cutAt} ms)`);

    // The same desktop, still live, and served through the proxy.
    const back = await api(ctl(), 'POST', '/api/v1/sessions', { username: alice });
    expect(back.status, back.text).toBe(200);
    expect(back.body.id).toBe(desk.id);
    expect(back.body.blade).toBe(CUT);
    const fb = await viewerHandshake(back.body.websocketPath);
    expect(fb.width).toBeGreaterThan(0);
    await checkInvariants({ controller: ctl(), users: [alice, bob], dataDir: ctl().dataDir });
  }, FULL ? 180_000 : 90_000);

  it('packet loss: light loss does not make the blade flap DOWN, and a start caught by a total drop leaves no desktop behind', async () => {
    const [carol, dave, erin] = [USERS[2]!, USERS[3]!, USERS[4]!];
    const port = cut!.port;

    // Light loss while a start runs on the blade and its health probes go on.
    const lossFrom = Date.now();
    netns!.dropPackets(port, LOSS_PERCENT);
    const started = await placeOn(CUT, carol);
    await api(ctl(), 'POST', `/api/v1/blades/${LO}/cordon`);
    const during = await api(ctl(), 'POST', '/api/v1/sessions', { username: dave });
    await api(ctl(), 'POST', `/api/v1/blades/${LO}/uncordon`);
    expect(during.status, during.text).toBe(201);
    expect((await api(ctl(), 'DELETE', `/api/v1/sessions/${during.body.id}`)).status).toBe(200);
    const rest = LOSS_MS - (Date.now() - lossFrom);
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    netns!.clearDrops();
    const lossMs = Date.now() - lossFrom;
    const flaps = transitions(CUT, 'DOWN').filter((t) => t >= lossFrom);
    console.log(`[figures] ${LOSS_PERCENT} % loss each way for ${lossMs} ms: ${flaps.length} DOWN transitions of the blade`);
    expect(flaps, `the blade was called DOWN under ${LOSS_PERCENT} % loss`).toEqual([]);
    expect(desktopsOf(carol)).toBe(1);
    expect(desktopsOf(dave)).toBe(0);

    // A total drop of the agent's port while a start for another user is in flight.
    await api(ctl(), 'POST', `/api/v1/blades/${LO}/cordon`);
    const dropFrom = Date.now();
    netns!.dropPackets(port, 100);
    const held = await api(ctl(), 'POST', '/api/v1/sessions', { username: erin });
    console.log(`[figures] start during a total drop answered ${held.status} ${held.body?.error?.code ?? ''} after ${Date.now() - dropFrom} ms`);
    expect(held.status, held.text).toBe(503);
    expect(held.text).not.toContain('token');
    const downAt = await nextTransition(CUT, 'DOWN', dropFrom, 20_000);
    console.log(`[figures] total drop with a start in flight: blade DOWN ${downAt - dropFrom} ms after the drop began`);
    const liftedAt = Date.now();
    netns!.clearDrops();
    const upAt = await nextTransition(CUT, 'UP', liftedAt, 30_000);
    console.log(`[figures] drop lifted: blade UP ${upAt - liftedAt} ms later`);
    // Whatever the held request became (dropped with its connection, or refused when it arrived late), it started
    // nothing.
    await checkInvariants({ controller: ctl(), users: [carol, dave, erin], dataDir: ctl().dataDir });
    expect(desktopsOf(erin)).toBe(0);

    // The agent's answers lost while it starts a desktop: the desktop it started for nobody does not survive.
    const mutedFrom = Date.now();
    netns!.dropPackets(port, 100, 'out');
    const unanswered = await api(ctl(), 'POST', '/api/v1/sessions', { username: dave });
    console.log(`[figures] start whose answer was dropped answered ${unanswered.status} ${unanswered.body?.error?.code ?? ''} after ${Date.now() - mutedFrom} ms`);
    expect(unanswered.status, unanswered.text).toBe(503);
    const answeredAt = Date.now();
    const leftAtAnswer = desktopsOf(dave);
    netns!.clearDrops();
    await expect.poll(() => desktopsOf(dave), { timeout: 20_000, interval: 100 }).toBe(0);
    console.log(`[figures] answers dropped: ${leftAtAnswer} desktop(s) of the refused start when the 503 came, 0 `
      + `${Date.now() - answeredAt} ms later (the drop ended at once)`);
    await api(ctl(), 'POST', `/api/v1/blades/${LO}/uncordon`);
    await waitForBladeStates(ctl(), { [CUT]: 'UP' }, 30_000);
    await checkInvariants({ controller: ctl(), users: [carol, dave, erin], dataDir: ctl().dataDir });

    // Carol's desktop lived through it all and is served; Erin and Dave can start theirs now, exactly once.
    const carolBack = await api(ctl(), 'POST', '/api/v1/sessions', { username: carol });
    expect(carolBack.status, carolBack.text).toBe(200);
    expect(carolBack.body.id).toBe(started.id);
    expect((await viewerHandshake(carolBack.body.websocketPath)).width).toBeGreaterThan(0);
    for (const u of [erin, dave]) {
      const now = await api(ctl(), 'POST', '/api/v1/sessions', { username: u });
      expect(now.status, now.text).toBe(201);
    }
    await checkInvariants({ controller: ctl(), users: [carol, dave, erin], dataDir: ctl().dataDir });
  }, FULL ? 240_000 : 120_000);

  it('link down during a start: the blade is DOWN while the start still waits, the POST gets a clear 503, and once the link is back no desktop is left behind', async () => {
    const user = USERS[5]!;
    expect((await api(ctl(), 'POST', `/api/v1/blades/${LO}/cordon`)).status).toBe(200);
    // Not a silent blade's grace plus the start's deadline: DOWN comes while that start still waits for its answer.
    const { cutAt, downAt, answeredBeforeDown, answer } = await cutDuringStart(user);
    console.log(`[figures] link down during a start: blade DOWN ${downAt - cutAt} ms after the cut; the POST answered `
      + `${answer.status} ${answer.body?.error?.code ?? ''} ${Date.now() - cutAt} ms after the cut`);
    expect(answeredBeforeDown, 'the POST was answered before the blade was called DOWN').toBe(false);
    expect(answer.status, answer.text).toBe(503);
    expect(answer.body.error.code).toBe('VD_ERR_NO_BLADE_AVAILABLE');
    expect(answer.body.error.message).toContain(CUT);
    expect(answer.text).not.toContain('token');
    // The session the failed start made is over: nothing live for the user while the blade is away.
    const during = (await api(ctl(), 'GET', `/api/v1/sessions?state=live&user=${user}`)).body.sessions as unknown[];
    expect(during).toEqual([]);
    const leftOnCut = desktopsOnCut(user);

    const restoredAt = Date.now();
    netns!.setLink(true);
    const upAt = await nextTransition(CUT, 'UP', restoredAt, 60_000);
    // The desktop the blade finished for a start nobody waits for any more is stopped, by the agent or as an orphan.
    await expect.poll(() => desktopsOf(user), { timeout: 30_000, interval: 100 }).toBe(0);
    console.log(`[figures] link back: blade UP ${upAt - restoredAt} ms later; ${leftOnCut} desktop(s) of the failed start `
      + `ran on the cut-off blade during the cut, 0 ${Date.now() - restoredAt} ms after the link came back`);
    expect((await api(ctl(), 'POST', `/api/v1/blades/${LO}/uncordon`)).status).toBe(200);
    await checkInvariants({ controller: ctl(), users: [user], dataDir: ctl().dataDir });

    // The user starts a desktop now, exactly one.
    const again = await api(ctl(), 'POST', '/api/v1/sessions', { username: user });
    expect(again.status, again.text).toBe(201);
    expect(desktopsOf(user)).toBe(1);
    await checkInvariants({ controller: ctl(), users: [user], dataDir: ctl().dataDir });
  }, FULL ? 180_000 : 150_000);

  it('link down during a start with a healthy blade open: the user gets a desktop there, and the one the cut-off blade finished is stopped once the link is back', async () => {
    const [busyUser, user] = [USERS[6]!, USERS[7]!];
    // The healthy blade carries a desktop, so least-loaded placement tries the cut-off blade first.
    await placeOn(LO, busyUser);
    const { cutAt, downAt, answeredBeforeDown, answer } = await cutDuringStart(user);
    const leftOnCut = desktopsOnCut(user);
    console.log(`[figures] link down during a start, healthy blade open: blade DOWN ${downAt - cutAt} ms after the cut; `
      + `the POST answered ${answer.status} on ${answer.body?.blade ?? '-'} ${Date.now() - cutAt} ms after the cut; `
      + `${leftOnCut} desktop(s) of it left on the cut-off blade`);
    expect(answeredBeforeDown, 'the POST was answered before the blade was called DOWN').toBe(false);
    expect(answer.status, answer.text).toBe(201);
    expect(answer.body.blade).toBe(LO);

    const restoredAt = Date.now();
    netns!.setLink(true);
    const upAt = await nextTransition(CUT, 'UP', restoredAt, 60_000);
    // Same session id on both blades: the copy on the cut-off blade is not the session's desktop, and goes.
    await expect.poll(() => desktopsOnCut(user), { timeout: 30_000, interval: 100 }).toBe(0);
    console.log(`[figures] link back: blade UP ${upAt - restoredAt} ms later, the copy on it gone ${Date.now() - restoredAt} ms `
      + 'after the link came back');
    expect(desktopsOf(user)).toBe(1);
    await checkInvariants({ controller: ctl(), users: [busyUser, user], dataDir: ctl().dataDir });
    // The desktop on the healthy blade is the user's, and is served.
    const back = await api(ctl(), 'POST', '/api/v1/sessions', { username: user });
    expect(back.status, back.text).toBe(200);
    expect(back.body.id).toBe(answer.body.id);
    expect(back.body.blade).toBe(LO);
    expect((await viewerHandshake(back.body.websocketPath)).width).toBeGreaterThan(0);
  }, FULL ? 180_000 : 150_000);
});
