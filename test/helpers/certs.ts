/**
 * Test PKI made with the product's own `vncdispatch pki` code (controller/cli/pki.ts, openssl underneath): a CA, a
 * server certificate for localhost/127.0.0.1/::1, a client certificate signed by the CA, and a client certificate
 * from a second, untrusted CA. Real certificates, real mTLS.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCa, issueCert } from '../../controller/cli/pki.js';

export interface Pki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Signed by another CA: must be refused. */
  rogueCert: string;
  rogueKey: string;
}

/** Writes a fresh PKI into a new temp directory; file paths are in the result. */
export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'vncdispatch-pki-'));
  const caCert = ensureCa(dir, 2);
  const server = issueCert(dir, 'server', ['localhost', '127.0.0.1', '::1'], 'serverAuth', 2);
  const client = issueCert(dir, 'client', [], 'clientAuth', 2);
  // The intruder's CA lives in its own directory: same tool, different key, never trusted by the agent.
  const rogueDir = join(dir, 'rogue');
  ensureCa(rogueDir, 2);
  const rogue = issueCert(rogueDir, 'intruder', [], 'clientAuth', 2);
  return {
    dir,
    caCert,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    rogueCert: rogue.cert,
    rogueKey: rogue.key,
  };
}
