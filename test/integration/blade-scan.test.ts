/**
 * Blade registration cannot be turned into a port scanner by whoever holds an API key: every failed probe reads the
 * same in the API, whatever answered (or did not) at the registered address; the details stay in the log.
 * In-process controller (buildController) with the test PKI; no agent is needed.
 */
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BLADE_UNREACHABLE } from '../../controller/blades/registry.js';
import { makePki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { buildController, type InProcessController } from '../helpers/controller-process.js';

let rig: { controller: InProcessController };

beforeAll(async () => {
  rig = { controller: await buildController({ pki: makePki() }) };
});

afterAll(async () => {
  await rig?.controller.stop();
  if (rig) rmSync(rig.controller.dataDir, { recursive: true, force: true });
});

it('an API-key holder cannot tell an open port from a closed one by registering them as blades', async () => {
  // An open port that is no agent (an HTTP server) and a port nobody listens on.
  const open = createServer((_req, res) => res.end('hello')).listen(0, '127.0.0.1');
  await once(open, 'listening');
  const closed = createServer().listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const closedPort = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  try {
    for (const [name, port] of [['scan-open', (open.address() as AddressInfo).port], ['scan-closed', closedPort]] as const) {
      expect((await api(rig.controller, 'POST', '/api/v1/blades', { name, address: `127.0.0.1:${port}` })).status).toBe(201);
    }
    await waitForBladeStates(rig.controller, { 'scan-open': 'DOWN', 'scan-closed': 'DOWN' });
    const blades = (await api(rig.controller, 'GET', '/api/v1/blades')).body.blades as { name: string; lastError: string | null }[];
    const errors = ['scan-open', 'scan-closed'].map((n) => blades.find((b) => b.name === n)?.lastError);
    expect(errors[0]).toBe(BLADE_UNREACHABLE);
    expect(errors[1]).toBe(errors[0]);
  } finally {
    open.close();
  }
});
