/**
 * A real controller process (dist/controller/main.js) with one real agent (mTLS, real Xvnc) behind it, for the tests
 * of what reaches the controller from outside: hostile HTTP, upgrades and RFB. `grant()` opens a real desktop through
 * the REST API, so its token is the controller's own.
 */
import { rmSync } from 'node:fs';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from './agent-process.js';
import { makePki, type Pki } from './certs.js';
import { api, waitForBladeStates } from './controller-checks.js';
import { startController, type ControllerProcess } from './controller-process.js';

export interface Grant {
  sessionId: string;
  token: string;
  reconnectKey: string;
}

export interface EdgeRig {
  pki: Pki;
  agent: AgentProcess | null;
  controller: ControllerProcess;
  port: number;
  /** Opens (or gets back) `username`'s desktop and returns a fresh token and reconnect key. */
  grant(username: string, clientIp?: string): Promise<Grant>;
  /** GET /healthz answers 200. */
  healthy(): Promise<boolean>;
  /** Session rows in the store, live or ended. */
  sessionCount(): Promise<number>;
  close(): Promise<void>;
}

export async function startEdgeRig(options: { args?: string[]; withAgent?: boolean } = {}): Promise<EdgeRig> {
  const pki = makePki();
  const agent = options.withAgent === false ? null : await startAgent({ pki, args: ['--max-sessions', '10'] });
  const controller = await startController({
    pki,
    blades: agent ? [{ name: 'edge', address: `127.0.0.1:${agent.port}` }] : [],
    args: options.args ?? [],
  });
  if (agent) await waitForBladeStates(controller, { edge: 'UP' });
  const port = Number(new URL(controller.url).port);
  return {
    pki,
    agent,
    controller,
    port,
    async grant(username, clientIp) {
      const r = await api(controller, 'POST', '/api/v1/sessions', { username, ...(clientIp && { clientIp }) });
      if (r.status !== 200 && r.status !== 201) throw new Error(`grant for ${username}: ${r.status} ${r.text}`);
      const fragment = new URLSearchParams(new URL(r.body.viewerUrl as string).hash.slice(1));
      return { sessionId: r.body.id as string, token: r.body.token as string, reconnectKey: fragment.get('key')! };
    },
    async healthy() {
      const res = await fetch(`${controller.url}/healthz`).catch(() => null);
      return res?.status === 200;
    },
    async sessionCount() {
      return ((await api(controller, 'GET', '/api/v1/sessions?state=all&limit=1000')).body.sessions as unknown[]).length;
    },
    close: () => tearDownRig({ pki, agent, controller }),
  };
}

/**
 * Tears down a controller and its agent: ends every live session through the controller (so each is recorded as
 * ended), stops the controller, ends any desktop left on the agent, stops the agent and removes both processes'
 * directories. Either process may be missing (a set-up that failed half way).
 */
export async function tearDownRig(rig: { pki: Pki; agent?: AgentProcess | null | undefined;
  controller?: ControllerProcess | undefined; dataDir?: string | undefined }): Promise<void> {
  const { pki, agent, controller } = rig;
  if (controller) {
    const live = await api(controller, 'GET', '/api/v1/sessions?state=live').catch(() => null);
    for (const s of live?.body?.sessions ?? []) await api(controller, 'DELETE', `/api/v1/sessions/${s.id}`).catch(() => {});
    await controller.stop();
  }
  if (agent) {
    const client = agentClient(agent.address, pki);
    const left = await call(client, client.listSessions, {}, 3000).catch(() => ({ sessions: [] }));
    for (const s of left.sessions) await endDesktop(client, s);
    client.close();
    await agent.stop();
    rmSync(agent.stateDir, { recursive: true, force: true });
  }
  const dataDir = rig.dataDir ?? controller?.dataDir;
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}
