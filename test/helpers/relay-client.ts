/**
 * A test client for an agent's desktop relay, written from the protocol in agent.proto (RelayOpen) rather than with
 * the controller's code, so the agent's side is checked against the contract: TLS with ALPN "vncdispatch-relay/1"
 * (or plain TCP for --insecure), the magic, a framed RelayOpen, a framed RelayOpened. Resolves with the socket,
 * positioned at the desktop's first RFB byte, or rejects with the agent's refusal (`code`, `message`).
 */
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { RelayOpen, RelayOpened } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import type { Pki } from './certs.js';

export interface RelayClientOptions {
  /** host:port of the agent. */
  address: string;
  sessionId: string;
  /** Mutual TLS with the PKI's client certificate (or `cert`); omitted = plain TCP (--insecure agents). */
  pki?: Pki;
  cert?: { cert: string; key: string };
  /** Offer this ALPN instead of the relay's. */
  alpn?: string[];
  timeoutMs?: number;
}

export class RelayRefused extends Error {
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

export function openRelay(o: RelayClientOptions): Promise<Socket> {
  const [host, portText] = [o.address.slice(0, o.address.lastIndexOf(':')).replace(/^\[|\]$/g, ''), o.address.slice(o.address.lastIndexOf(':') + 1)];
  const port = Number(portText);
  return new Promise((resolve, reject) => {
    const c = o.cert ?? (o.pki ? { cert: o.pki.clientCert, key: o.pki.clientKey } : undefined);
    const sock: Socket = o.pki
      ? tlsConnect({ host, port, servername: 'localhost', ca: readFileSync(o.pki.caCert), cert: readFileSync(c!.cert),
        key: readFileSync(c!.key), ALPNProtocols: o.alpn ?? ['vncdispatch-relay/1'] })
      : netConnect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('relay: no answer in time'));
    }, o.timeoutMs ?? 10_000);
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const len = buf.readUInt16BE(0);
      const answer = RelayOpened.decode(buf.subarray(2, 2 + len));
      sock.off('data', onData);
      clearTimeout(timer);
      if (!answer.ok) {
        sock.destroy();
        reject(new RelayRefused(answer.code, answer.message));
        return;
      }
      sock.pause();
      const rest = buf.subarray(2 + len);
      if (rest.length) sock.unshift(rest);
      resolve(sock);
    };
    sock.on('data', onData);
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.once('close', () => {
      clearTimeout(timer);
      reject(new Error('relay: closed before an answer'));
    });
    sock.once(o.pki ? 'secureConnect' : 'connect', () => {
      const body = RelayOpen.encode({ sessionId: o.sessionId }).finish();
      const head = Buffer.alloc(10);
      head.write('VDRELAY1', 'latin1');
      head.writeUInt16BE(body.length, 8);
      sock.write(Buffer.concat([head, body]));
    });
  });
}
