/**
 * `vncdispatch pki`: makes the mutual-TLS material a fleet needs with the openssl CLI (argv arrays, no shell):
 * one CA, a server certificate per agent (for its host names / IPs) and a client certificate for the controller.
 * Keys are EC P-256, written 0600.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';

export interface IssuedCert {
  cert: string;
  key: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/;

/** Creates `ca.crt`/`ca.key` in `dir` unless they exist. Returns the CA certificate path. */
export function ensureCa(dir: string, days = 3650): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(join(dir, 'ca.crt'))) {
    openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', 'ca.key', '-out', 'ca.crt', '-days', String(days), '-subj', '/CN=vncdispatch CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    chmodSync(join(dir, 'ca.key'), 0o600);
  }
  return join(dir, 'ca.crt');
}

/**
 * Issues `<name>.crt`/`<name>.key` signed by the CA in `dir`. `hosts` become subjectAltNames (DNS or IP).
 * `usage` is serverAuth for agents and clientAuth for the controller.
 */
export function issueCert(dir: string, name: string, hosts: string[], usage: 'serverAuth' | 'clientAuth',
  days = 825): IssuedCert {
  if (!NAME.test(name)) throw new TypeError(`invalid certificate name: ${JSON.stringify(name)}`);
  for (const h of hosts) if (!isIP(h) && !NAME.test(h)) throw new TypeError(`invalid host name: ${JSON.stringify(h)}`);
  ensureCa(dir);
  const san = hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `${san ? `subjectAltName=${san}\n` : ''}extendedKeyUsage=${usage}\nbasicConstraints=CA:FALSE\n`);
  openssl(dir, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', `${name}.crt`, '-days', String(days), '-extfile', ext]);
  chmodSync(join(dir, `${name}.key`), 0o600);
  rmSync(join(dir, `${name}.csr`));
  rmSync(ext);
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}
