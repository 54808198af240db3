/**
 * Stock gRPC tooling works against the agent: a client that is not ours (Debian's python3-grpcio and
 * python3-protobuf, test/fixtures/grpc-reflection-client.py) lists the services through server reflection over
 * mutual TLS, builds its messages only from the descriptors reflection serves, and calls Health/Check and
 * Agent/GetStatus. The same steps as `grpcurl -cacert … -cert … -key … HOST:PORT list` / `describe` / call.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { repoRoot } from '../helpers/node-service.js';

const CLIENT = resolve(repoRoot(), 'test', 'fixtures', 'grpc-reflection-client.py');

let pki: Pki;
let agent: AgentProcess;

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki, args: ['--max-sessions', '7'] });
}, 30_000);

afterAll(async () => {
  await agent?.stop();
});

describe('gRPC reflection and health for third-party clients', () => {
  it('lists the Agent and health services, serves their real files with their imports, and the calls work', async () => {
    const { stdout } = await promisify(execFile)('/usr/bin/python3',
      [CLIENT, `127.0.0.1:${agent.port}`, pki.caCert, pki.clientCert, pki.clientKey, 'localhost'], { timeout: 30_000 });
    const out = JSON.parse(stdout) as {
      services: string[];
      files: Record<string, string[]>;
      health: { status: string };
      status: Record<string, unknown>;
      session_fields: string[];
    };
    expect(out.services).toEqual(expect.arrayContaining(['grpc.health.v1.Health', 'vncdispatch.agent.v1.Agent']));
    // File names as in proto/, with the import of the well-known Timestamp.
    expect(out.files['vncdispatch/agent/v1/agent.proto']).toEqual(['google/protobuf/timestamp.proto']);
    expect(out.files['grpc/health/v1/health.proto']).toEqual([]);
    expect(out.files).toHaveProperty(['google/protobuf/timestamp.proto']);
    expect(out.health.status).toBe('SERVING');
    expect(out.status).toMatchObject({ capacity: 7, live_sessions: 0 });
    expect(typeof out.status.hostname).toBe('string');
    // snake_case, as written in the .proto.
    expect(out.session_fields).toEqual(expect.arrayContaining(['started_at', 'username', 'pid']));
  });
});
