/**
 * The whole product on loopback for viewer tests that break things on purpose: a real agent process (real Xvnc
 * desktops behind its mTLS relay), the real controller process registered with it, and headless Chromium. The agent
 * can be killed and started again on the same port, state and runtime directories (it re-adopts its desktops), so
 * a test that takes the blade down can leave the rig as it found it.
 */
import { rmSync } from 'node:fs';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { agentClient, call, endDesktop, startAgent, type AgentClient, type AgentProcess } from './agent-process.js';
import { launchChromium } from './browser.js';
import { makePki, type Pki } from './certs.js';
import { api, waitForBladeStates } from './controller-checks.js';
import { startController, type ControllerProcess } from './controller-process.js';

export interface ViewerRig {
  pki: Pki;
  agent: AgentProcess;
  client: AgentClient;
  controller: ControllerProcess;
  browser: Browser;
  /** POSTs a session for `username`; the controller's answer (id, viewerUrl, …). */
  openSession(username: string): Promise<{ id: string; viewerUrl: string }>;
  /** The agent's record of `username`'s desktop (its id, Xvnc pid, …). */
  desktopOf(username: string): Promise<Session>;
  /** A fresh browser context and page; closed by `closePages()`. */
  newPage(): Promise<Page>;
  closePages(): Promise<void>;
  /** Kills the agent with `signal` and starts it again where it was; resolves once the blade is UP again. */
  restartAgent(signal: NodeJS.Signals, beforeStart?: () => Promise<void>): Promise<void>;
  /** Ends the desktops of `users` (through the agent, else by killing Xvnc) and stops everything. */
  close(users: string[]): Promise<void>;
}

export async function startViewerRig(): Promise<ViewerRig> {
  const pki = makePki();
  let agent = await startAgent({ pki });
  const { port, stateDir, runtimeDir } = agent;
  let client = agentClient(agent.address, pki);
  const controller = await startController({ pki, blades: [{ name: 'b1', address: `127.0.0.1:${port}` }] });
  await waitForBladeStates(controller, { b1: 'UP' }, 15_000);
  const browser = await launchChromium();
  const contexts: BrowserContext[] = [];

  const rig: ViewerRig = {
    pki, agent, client, controller, browser,
    async openSession(username) {
      const r = await api(controller, 'POST', '/api/v1/sessions', { username });
      if (r.status !== 201 && r.status !== 200) throw new Error(`POST /api/v1/sessions for ${username}: ${r.status} ${r.text}`);
      return r.body;
    },
    async desktopOf(username) {
      const s = (await call(client, client.listSessions, {})).sessions.find((x) => x.username === username);
      if (!s) throw new Error(`the agent runs no desktop for ${username}`);
      return s;
    },
    async newPage() {
      const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
      contexts.push(context);
      return context.newPage();
    },
    async closePages() {
      for (const c of contexts.splice(0)) await c.close().catch(() => undefined);
    },
    async restartAgent(signal, beforeStart) {
      client.close();
      await agent.stop(signal);
      await beforeStart?.();
      agent = await startAgent({ pki, stateDir, runtimeDir, args: ['--listen', `127.0.0.1:${port}`] });
      client = agentClient(agent.address, pki);
      rig.agent = agent;
      rig.client = client;
      await waitForBladeStates(controller, { b1: 'UP' }, 15_000);
    },
    async close(users) {
      await rig.closePages();
      await browser.close().catch(() => undefined);
      const sessions = (await call(client, client.listSessions, {}).catch(() => ({ sessions: [] as Session[] }))).sessions;
      for (const s of sessions.filter((x) => users.includes(x.username))) await endDesktop(client, s);
      await controller.stop();
      client.close();
      await agent.stop();
      rmSync(controller.dataDir, { recursive: true, force: true });
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(runtimeDir, { recursive: true, force: true });
    },
  };
  return rig;
}

/**
 * Records in the page, as they happen, every change of #status: its state, text and reason, with the page's
 * Date.now(). Read them with `statusChanges(page)`. The page and the test share the machine's clock.
 */
export async function recordStatus(page: Page): Promise<void> {
  await page.evaluate(() => {
    const el = document.getElementById('status')!;
    const seen: { at: number; state: string; text: string; reason: string }[] = [];
    (window as unknown as { __status: typeof seen }).__status = seen;
    const note = () => seen.push({ at: Date.now(), state: el.dataset.state ?? '', text: el.textContent ?? '',
      reason: el.dataset.reason ?? '' });
    new MutationObserver(note).observe(el, { attributes: true, childList: true, characterData: true, subtree: true });
  });
}

export interface StatusChange { at: number; state: string; text: string; reason: string }

export function statusChanges(page: Page): Promise<StatusChange[]> {
  return page.evaluate(() => (window as unknown as { __status: StatusChange[] }).__status);
}
