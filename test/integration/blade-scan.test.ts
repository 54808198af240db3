/**
 * Blade registration cannot be turned into a port scanner by whoever holds an API key: only addresses inside
 * --blade-networks are registered (and dialled) at all, and every failed probe reads the same in the API, whatever
 * answered (or did not) at the registered address; the details stay in the log.
 * In-process controllers (buildController) with the test PKI; no agent is needed.
 */
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
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

/** A TCP listener that counts the connections it is offered (a would-be scan target). */
async function countingListener(host: string): Promise<{ port: number; connections: () => number; close: () => void }> {
  let n = 0;
  const server = createNetServer((s) => {
    n++;
    s.destroy();
  }).listen(0, host);
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, connections: () => n, close: () => server.close() };
}

describe('--blade-networks', () => {
  it('a blade outside the allowed networks is refused with 403 VD_ERR_BLADE_ADDRESS_NOT_ALLOWED: nothing stored, never dialled', async () => {
    const c = await buildController({ pki: makePki(), args: ['--blade-networks', '127.0.0.1/32'] });
    const outside = await countingListener('127.0.0.2');
    const inside = await countingListener('127.0.0.1');
    try {
      const refused = await api(c, 'POST', '/api/v1/blades', { name: 'outside', address: `127.0.0.2:${outside.port}` });
      expect(refused.status).toBe(403);
      expect(refused.body.error.code).toBe('VD_ERR_BLADE_ADDRESS_NOT_ALLOWED');
      // The same through IPv4-mapped IPv6 and a host name (which could be re-pointed after the check).
      for (const address of [`[::ffff:127.0.0.2]:${outside.port}`, `localhost:${outside.port}`]) {
        const r = await api(c, 'POST', '/api/v1/blades', { name: 'outside', address });
        expect(r.body.error?.code, address).toBe('VD_ERR_BLADE_ADDRESS_NOT_ALLOWED');
      }
      // One that is allowed is dialled: once it has been, the refused one would have been too.
      expect((await api(c, 'POST', '/api/v1/blades', { name: 'inside', address: `127.0.0.1:${inside.port}` })).status).toBe(201);
      await vi.waitFor(() => expect(inside.connections()).toBeGreaterThan(0), { timeout: 10_000 });
      expect(outside.connections()).toBe(0);
      expect((await c.store.listBlades()).map((b) => b.name)).toEqual(['inside']);
      expect(((await api(c, 'GET', '/api/v1/blades')).body.blades as { name: string }[]).map((b) => b.name)).toEqual(['inside']);
    } finally {
      outside.close();
      inside.close();
      await c.stop();
      rmSync(c.dataDir, { recursive: true, force: true });
    }
  });

  it('by default refuses public and link-local addresses (the cloud metadata service) and allows private ones', async () => {
    const c = rig.controller;
    for (const address of ['192.0.2.10:50051', '8.8.8.8:53', '169.254.169.254:80', '[fe80::1]:50051', '[2001:db8::1]:50051']) {
      const r = await api(c, 'POST', '/api/v1/blades', { name: 'public', address });
      expect(r.status, address).toBe(403);
      expect(r.body.error.code, address).toBe('VD_ERR_BLADE_ADDRESS_NOT_ALLOWED');
    }
    expect(await c.store.getBlade('public')).toBeNull();
    for (const [name, address] of [['private-10', '10.20.30.40:50051'], ['private-192', '192.168.1.2:50051'], ['private-ula', '[fd12::3]:50051']]) {
      expect((await api(c, 'POST', '/api/v1/blades', { name, address })).status, address).toBe(201);
      expect((await api(c, 'DELETE', `/api/v1/blades/${name}`)).status).toBe(200);
    }
  });

  it('with --blade-networks none no blade can be registered through the API; --blade still works', async () => {
    const c = await buildController({ pki: makePki(), args: ['--blade-networks', 'none'], blades: [{ name: 'given', address: '127.0.0.1:9' }] });
    try {
      const r = await api(c, 'POST', '/api/v1/blades', { name: 'other', address: '127.0.0.1:9' });
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe('VD_ERR_BLADE_ADDRESS_NOT_ALLOWED');
      expect(((await api(c, 'GET', '/api/v1/blades')).body.blades as { name: string }[]).map((b) => b.name)).toEqual(['given']);
    } finally {
      await c.stop();
      rmSync(c.dataDir, { recursive: true, force: true });
    }
  });
});
