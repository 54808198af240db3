/**
 * How the controller process verifies agents it reaches over mTLS: an agent addressed by IP is checked against the
 * IP SANs of its certificate, without the IP going into TLS SNI (so the controller's log carries no DEP0123
 * deprecation warning); an agent whose certificate does not name the address it is reached at is refused (its blade
 * stays DOWN), and the same agent reached by a name its certificate does carry is accepted.
 * No desktops are started: no test users.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCert } from '../../controller/cli/pki.js';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';

let pki: Pki;
let byIp: AgentProcess;
let nameOnly: AgentProcess;
let controller: ControllerProcess;

beforeAll(async () => {
  pki = makePki();
  byIp = await startAgent({ pki }); // certificate for localhost, 127.0.0.1 and ::1
  const named = issueCert(pki.dir, 'named-only', ['localhost'], 'serverAuth', 2);
  nameOnly = await startAgent({ pki: { ...pki, serverCert: named.cert, serverKey: named.key } });
  controller = await startController({
    pki,
    blades: [
      { name: 'by-ip', address: `127.0.0.1:${byIp.port}` },
      { name: 'wrong-ip', address: `127.0.0.1:${nameOnly.port}` },
      { name: 'by-name', address: `localhost:${nameOnly.port}` },
    ],
  });
}, 60_000);

afterAll(async () => {
  await controller?.stop();
  await byIp?.stop();
  await nameOnly?.stop();
});

describe('agent certificates as the controller checks them', () => {
  it('accepts an agent by IP (IP SAN) and by name (DNS SAN), and refuses one whose certificate lacks the IP', async () => {
    await waitForBladeStates(controller, { 'by-ip': 'UP', 'by-name': 'UP', 'wrong-ip': 'DOWN' }, 15_000);
    const blades = (await api(controller, 'GET', '/api/v1/blades')).body.blades as Array<{ name: string; lastError?: string }>;
    expect(blades.find((b) => b.name === 'wrong-ip')?.lastError).toBeTruthy();
  });

  it('puts no IP in TLS SNI: the log has no DEP0123 warning', () => {
    expect(controller.logs.filter((l) => /DEP0123|ServerName to an IP/.test(l))).toEqual([]);
  });
});
