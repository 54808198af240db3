/**
 * A controller's death costs a viewer one reconnect: two controller processes behind a real Debian nginx sharing one
 * store, a viewer in Chromium through nginx, and the controller carrying the viewer's connection killed with
 * SIGKILL. The viewer reconnects through nginx to the other controller and shows the same desktop. The failover time
 * is taken from recorded timestamps (the kill in this process, the second completed connection in the page, one
 * wall clock) and must be at most 2 s. Runs on the shared SQLite file, and on MongoDB where MONGODB_URL is set (the
 * output says plainly when that half is skipped). User vdtest99.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { launchChromium } from '../helpers/browser.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { checkInvariants } from '../helpers/invariants.js';
import { startNginxLb, type NginxLb } from '../helpers/nginx-lb.js';
import { freeLoopbackPort } from '../helpers/ports.js';
import { testUser } from '../helpers/users.js';

const USER = testUser(99);
const MONGODB_URL = process.env.MONGODB_URL;
if (!MONGODB_URL) {
  console.warn('Failover through nginx on MongoDB SKIPPED: set MONGODB_URL=mongodb://... to run it');
}

let pki: Pki;
let agent: AgentProcess;
let browser: Browser;

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  const client = agentClient(agent.address, pki);
  const left = await call(client, client.listSessions, {}, 3000).catch(() => ({ sessions: [] }));
  for (const s of left.sessions) if (s.username === USER) await endDesktop(client, s);
  client.close();
  await agent?.stop();
});

/** Open desktop connections a controller's proxy holds, from its /metrics. */
async function openConnections(c: ControllerProcess): Promise<number> {
  const text = await (await fetch(`${c.url}/metrics`)).text();
  return Number(/^vncdispatch_proxy_connections_open(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0);
}

// Both backends are always declared, so the run counts the MongoDB case as skipped rather than leaving it out.
const backends = [
  { name: 'one SQLite file', store: (dir: string) => ['--data-dir', dir], skip: false },
  { name: 'MongoDB', store: () => ['--mongodb-url', MONGODB_URL ?? ''], skip: !MONGODB_URL },
];

describe.each(backends)('failover through nginx ($name)', ({ store, skip }) => {
  let lb: NginxLb | undefined;
  const controllers: ControllerProcess[] = [];

  afterAll(async () => {
    for (const c of controllers) await c.stop('SIGKILL').catch(() => {});
    await lb?.stop();
  });

  it.skipIf(skip)('kill -9 of the controller carrying a viewer: it reconnects through nginx to the other within 2 s, same desktop', async () => {
    const lbPort = await freeLoopbackPort();
    const publicUrl = `http://127.0.0.1:${lbPort}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'vd-failover-'));
    const apiKey = 'failover-test-api-key-0123456789';
    for (let i = 0; i < 2; i++) {
      const c = await startController({
        pki, apiKey, dataDir, blades: [{ name: 'f1', address: agent.address }],
        args: [...store(dataDir), '--public-url', publicUrl, '--trust-proxy', '127.0.0.1', '--token-reuse'],
      });
      controllers.push(c);
      await waitForBladeStates(c, { f1: 'UP' });
    }
    lb = await startNginxLb(controllers.map((c) => new URL(c.url).host), lbPort);
    const viaLb = { ...controllers[0]!, url: lb.base };

    const grant = await api(viaLb, 'POST', '/api/v1/sessions', { username: USER });
    expect(grant.status).toBe(201);
    const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    const page = await context.newPage();
    // Every completed connection, stamped in the page (same machine, same wall clock as this process).
    await page.addInitScript(() => {
      const w = window as unknown as { vdConnected: number[] };
      w.vdConnected = [];
      new MutationObserver(() => {
        const el = document.getElementById('status');
        if (el?.dataset.connections && Number(el.dataset.connections) > w.vdConnected.length) w.vdConnected.push(Date.now());
      }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-connections'] });
    });
    await page.goto(`${lb.base}/viewer/${new URL(grant.body.viewerUrl).hash}`);
    await page.locator('#status[data-state="connected"][data-connections="1"]').waitFor({ timeout: 20_000 });

    const carrying = await (async () => {
      for (const c of controllers) if ((await openConnections(c)) > 0) return c;
      throw new Error('no controller holds the viewer connection');
    })();
    const survivor = controllers.find((c) => c !== carrying)!;
    const killedAt = Date.now();
    await carrying.stop('SIGKILL');

    await page.locator('#status[data-state="connected"][data-connections="2"]').waitFor({ timeout: 20_000 });
    const stamps = await page.evaluate(() => (window as unknown as { vdConnected: number[] }).vdConnected);
    const failoverMs = stamps[1]! - killedAt;
    console.log(`[figures] failover through nginx: viewer connected again ${failoverMs} ms after kill -9 of its controller`);
    expect(failoverMs).toBeLessThanOrEqual(2_000);
    expect(await openConnections(survivor)).toBe(1);
    // The same desktop: the same session, still running, and the page is drawing it.
    const session = await api(survivor, 'GET', `/api/v1/sessions/${grant.body.id}`);
    expect(session.body).toMatchObject({ id: grant.body.id, state: 'running' });
    expect(await page.evaluate(() => sessionStorage.length)).toBeGreaterThan(0);
    const box = await page.locator('#screen canvas').boundingBox();
    expect(box?.width ?? 0).toBeGreaterThan(100);
    await context.close();
    await api(survivor, 'DELETE', `/api/v1/sessions/${grant.body.id}`);
    await checkInvariants({ controller: survivor, users: [USER], ...(store(dataDir)[0] === '--data-dir' && { dataDir }) });
  }, 120_000);
});
