/**
 * A desktop that cannot be reached, as its person sees it in the viewer (headless Chromium, a real agent with real
 * Xvnc desktops behind its mTLS relay, the real controller process). The page must say why in words, from the
 * WebSocket close reason (or the refused reconnect's error code), not show a bare "Connection lost", and it must come
 * back by itself once the desktop answers again. Two real faults:
 *   - the desktop's Unix socket is moved away while Xvnc and its session live on, so the agent's connect to it fails
 *     (VD_ERR_DESKTOP_UNREACHABLE), and moved back;
 *   - the blade's agent is killed under a connected viewer, so the agent's port refuses (VD_ERR_BLADE_DOWN), and
 *     started again on the same port.
 * Users vdtest106 and vdtest107.
 */
import { renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { api } from '../helpers/controller-checks.js';
import { testUser } from '../helpers/users.js';
import { recordStatus, startViewerRig, statusChanges, type ViewerRig } from '../helpers/viewer-rig.js';

const U_SOCKET = testUser(106);
const U_AGENT = testUser(107);

let rig: ViewerRig;

beforeAll(async () => {
  rig = await startViewerRig();
}, 60_000);

afterEach(async () => {
  await rig?.closePages();
});

afterAll(async () => {
  await rig?.close([U_SOCKET, U_AGENT]);
}, 60_000);

describe('the viewer says why a desktop cannot be reached', () => {
  it('a desktop whose socket does not answer: "The desktop is not answering on its server", then the desktop once it answers', async () => {
    const session = await rig.openSession(U_SOCKET);
    const desktop = await rig.desktopOf(U_SOCKET);
    const socketPath = join(rig.agent.runtimeDir, desktop.id, 'vnc.sock');
    const aside = join(dirname(socketPath), 'vnc.sock.aside');
    renameSync(socketPath, aside);
    let moved = true;
    try {
      const page = await rig.newPage();
      await page.goto(session.viewerUrl);
      const status = page.locator('#status[data-reason="VD_ERR_DESKTOP_UNREACHABLE"]');
      await status.waitFor({ timeout: 10_000 });
      expect(await page.locator('#status').textContent()).toMatch(/^The desktop is not answering on its server\. Reconnecting/);
      await expect(page.locator('#screen .notice').textContent()).resolves.toBe('The desktop is not answering on its server.');
      // It keeps saying so while it retries (disconnected, then connecting again), and never that it is connected.
      expect(await page.locator('#status').getAttribute('data-state')).not.toBe('connected');
      // The session is still live: nothing was ended because one connection failed.
      expect((await api(rig.controller, 'GET', `/api/v1/sessions/${session.id}`)).body.state).toBe('running');

      renameSync(aside, socketPath);
      moved = false;
      await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
      expect(await page.locator('#status').getAttribute('data-reason')).toBe('');
      expect(await page.locator('#screen .notice').count()).toBe(0);
    } finally {
      if (moved) renameSync(aside, socketPath);
    }
  });

  it('a blade whose agent is down: "The server running this desktop is not answering", then the desktop once it is back', async () => {
    const session = await rig.openSession(U_AGENT);
    const page = await rig.newPage();
    await page.goto(session.viewerUrl);
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
    await recordStatus(page);

    await rig.restartAgent('SIGKILL', async () => {
      // While the agent is down, the page must have said why (from the relay's refusal, close reason
      // VD_ERR_BLADE_DOWN, or from the reconnect's 503 with that code, whichever came first).
      await page.locator('#status[data-reason="VD_ERR_BLADE_DOWN"]').waitFor({ timeout: 15_000 });
      expect(await page.locator('#status').textContent()).toMatch(/^The server running this desktop is not answering\. Reconnecting/);
    });
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 30_000 });
    const changes = await statusChanges(page);
    expect(changes.some((c) => c.reason === 'VD_ERR_BLADE_DOWN' && c.state === 'disconnected')).toBe(true);
    // Never a sentence without a reason while the blade was down, after the first drop.
    const firstWhy = changes.findIndex((c) => c.reason === 'VD_ERR_BLADE_DOWN');
    expect(changes.slice(firstWhy).filter((c) => c.state === 'disconnected' && c.reason === '')).toEqual([]);
    expect((await api(rig.controller, 'GET', `/api/v1/sessions/${session.id}`)).body.state).toBe('running');
  }, 120_000); // an agent restarted on a loaded machine, then the page's back-off
});
