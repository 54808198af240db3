/**
 * Fuzzing every field of every agent gRPC request, over real gRPC with mutual TLS against the real agent process:
 * well-formed messages with hostile field values (StartSession's username, password, geometry, depth, session id and
 * deadline; StopSession's id; the empty ListSessions and GetStatus), and raw bytes that may not decode at all.
 * Properties: the agent stays up and keeps answering; every error is a documented gRPC status carrying a documented
 * VD_AGENT_ code that maps to it (never VD_AGENT_INTERNAL); a refused request spawns no process and writes no file.
 * Fixed seed; FUZZ_SCALE (npm run test:fuzz sets 100) multiplies the runs. User vdtest60 is the one real account in
 * the mix, so that a request valid in every field really starts a desktop (then stopped).
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentErrorCodes, type AgentErrorCode } from '../../agent/errors.js';
import { GRPC_STATUS } from '../../agent/grpc/status-map.js';
import {
  GetStatusRequest, ListSessionsRequest, StartSessionRequest, StartSessionResponse, StopSessionRequest,
} from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { alive, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { fuzzParams as params, fuzzTimeout } from '../helpers/fuzz.js';
import { testUser } from '../helpers/users.js';

const REAL_USER = testUser(60);
const SERVICE = '/vncdispatch.agent.v1.Agent';

let pki: Pki;
let agent: AgentProcess;
let raw: Client;
let scriptDir: string;
let baseline: Set<number>;
let accepted = 0;

interface Answer {
  err: ServiceError | null;
  body: Buffer | undefined;
}

/** One unary call with the bytes as they are; resolves with whatever the agent answered. */
function send(method: string, bytes: Buffer): Promise<Answer> {
  return new Promise((resolve) => {
    raw.makeUnaryRequest(`${SERVICE}/${method}`, (b: Buffer) => b, (b: Buffer) => b, bytes, new Metadata(),
      { deadline: Date.now() + 15_000 }, (err, body) => resolve({ err, body }));
  });
}

/** The error is a documented one: its status, its VD_AGENT_ code in details and trailer, and the two agree. */
function expectDocumented(err: ServiceError, context: string): void {
  const code = /^(VD_AGENT_[A-Z_]+): /.exec(err.details)?.[1] as AgentErrorCode | undefined;
  expect(code, `no VD_AGENT_ code in ${JSON.stringify(err.details)} (${context})`).toBeDefined();
  expect(Object.keys(AgentErrorCodes)).toContain(code);
  expect(code, context).not.toBe('VD_AGENT_INTERNAL');
  expect(err.code, `${code} answered with status ${err.code} (${context})`).toBe(GRPC_STATUS[code!]);
  expect(err.metadata.get('vncdispatch-error-code')).toEqual([code]);
}

/**
 * The agent's direct children, from the kernel's per-thread children lists: everything the agent spawns (setpriv for
 * Xvnc and the session, getent, id) is its child, and reading these files costs far less than a /proc scan.
 */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      out.push(...readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    } catch {
      // The thread ended while we looked.
    }
  }
  return out.filter(alive);
}

function files(): string[] {
  return [...readdirSync(join(agent.stateDir, 'sessions')), ...readdirSync(agent.runtimeDir)];
}

/** After a refused request: no new process under the agent, no session record, no runtime directory. */
function expectNothingChanged(context: string): void {
  expect(children(agent.pid).filter((p) => !baseline.has(p)), `processes spawned for ${context}`).toEqual([]);
  expect(files(), `files written for ${context}`).toEqual([]);
}

/** After any request: the agent is alive and answers GetStatus. */
async function expectAnswering(): Promise<void> {
  expect(alive(agent.pid)).toBe(true);
  const { err } = await send('GetStatus', Buffer.alloc(0));
  expect(err).toBeNull();
}

beforeAll(async () => {
  pki = makePki();
  scriptDir = mkdtempSync(join(tmpdir(), 'vd-fuzz-'));
  chmodSync(scriptDir, 0o755);
  const quiet = join(scriptDir, 'quiet-session.sh');
  writeFileSync(quiet, '#!/bin/sh\nexec sleep 600\n', { mode: 0o755 });
  agent = await startAgent({ pki, args: ['--session-script', quiet, '--stop-grace-ms', '1000'] });
  raw = new Client(agent.address, credentials.createSsl(readFileSync(pki.caCert), readFileSync(pki.clientKey),
    readFileSync(pki.clientCert)), { 'grpc.ssl_target_name_override': 'localhost' });
  baseline = new Set(children(agent.pid));
});

afterAll(async () => {
  raw?.close();
  await agent?.stop();
  rmSync(scriptDir, { recursive: true, force: true });
});

const hostileText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.constantFrom('', ' ', 'a;id', '$(id)', '-c', '../x', '/etc/shadow', '%00', '\0', 'a\nroot', 'x'.repeat(10_240),
    '__proto__', 'constructor'),
);
/** Names that pass the pattern, so they reach NSS: unknown ones, privileged ones, and the one real user. */
const username = fc.oneof(
  { arbitrary: hostileText, weight: 4 },
  { arbitrary: fc.stringMatching(/^vdfz[a-z0-9_-]{0,8}$/), weight: 2 },
  { arbitrary: fc.constantFrom('root', 'nobody', 'daemon', 'bin', 'sync'), weight: 2 },
  { arbitrary: fc.constant(REAL_USER), weight: 2 },
);
const password = fc.oneof(fc.stringMatching(/^[\x21-\x7e]{1,8}$/), hostileText);
const geometry = fc.option(fc.oneof(
  fc.constantFrom('1024x768', '320x200', '8192x8192', '319x200', '8193x10', '0x0', '1x1', '1280x800;id', '99999x99999'),
  fc.tuple(fc.nat(10_000), fc.nat(10_000)).map(([w, h]) => `${w}x${h}`),
  hostileText,
), { nil: undefined });
const depth = fc.option(fc.oneof(fc.constantFrom(0, 8, 15, 16, 24, 32, 64), fc.nat({ max: 0xffffffff })),
  { nil: undefined });
const sessionId = fc.option(fc.oneof(fc.uuid(), fc.uuid().map((u) => u.toUpperCase()), hostileText),
  { nil: undefined });
const deadline = fc.option(fc.oneof(
  fc.integer({ min: -86_400_000, max: -1 }).map((d) => new Date(Date.now() + d)),
  fc.integer({ min: 30_000, max: 86_400_000 }).map((d) => new Date(Date.now() + d)),
  fc.date({ min: new Date(0), max: new Date(8.6e15), noInvalidDate: true }),
), { nil: undefined });

const startRequest = fc.record({ username, password, geometry, depth, sessionId, deadline });

/** Stops a desktop a valid request started, so every run begins from the same state. */
async function stopAccepted(body: Buffer): Promise<void> {
  const session = StartSessionResponse.decode(body).session!;
  const { err } = await send('StopSession', Buffer.from(StopSessionRequest.encode({ id: session.id }).finish()));
  expect(err).toBeNull();
  accepted++;
}

describe('agent gRPC requests with hostile fields', () => {
  it('StartSession: every field', async () => {
    await fc.assert(fc.asyncProperty(startRequest, async (req) => {
      const context = JSON.stringify(req).slice(0, 300);
      const { err, body } = await send('StartSession', Buffer.from(StartSessionRequest.encode(req).finish()));
      if (err) {
        expectDocumented(err, context);
        expectNothingChanged(context);
      } else {
        await stopAccepted(body!);
      }
      await expectAnswering();
    }), params(200));
  }, fuzzTimeout(120_000));

  it('StopSession: the id', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(fc.uuid(), hostileText), async (id) => {
      const { err } = await send('StopSession', Buffer.from(StopSessionRequest.encode({ id }).finish()));
      expect(err, 'a stop of a session that does not exist succeeded').not.toBeNull();
      expectDocumented(err!, id);
      expect([status.INVALID_ARGUMENT, status.NOT_FOUND]).toContain(err!.code);
      expectNothingChanged(id);
      await expectAnswering();
    }), params(100));
  }, fuzzTimeout(60_000));

  it('ListSessions and GetStatus: well-formed requests always answer', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom('ListSessions', 'GetStatus'), async (method) => {
      const bytes = method === 'GetStatus' ? GetStatusRequest.encode({}).finish() : ListSessionsRequest.encode({}).finish();
      const { err } = await send(method, Buffer.from(bytes));
      expect(err).toBeNull();
    }), params(50));
  }, fuzzTimeout(30_000));
});

describe('agent gRPC requests as raw bytes', () => {
  it('any bytes to any method get a documented answer and change nothing', async () => {
    const method = fc.constantFrom('StartSession', 'StopSession', 'ListSessions', 'GetStatus');
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 2048 }),
      // Valid framing with hostile contents: a field tag followed by a length that lies.
      fc.tuple(fc.integer({ min: 1, max: 15 }), fc.nat(0xffffffff), fc.uint8Array({ maxLength: 64 }))
        .map(([f, len, rest]) => Uint8Array.from([(f << 3) | 2, ...varint(len), ...rest])),
    );
    await fc.assert(fc.asyncProperty(method, bytes, async (m, b) => {
      const context = `${m} ${Buffer.from(b).toString('hex').slice(0, 200)}`;
      const { err, body } = await send(m, Buffer.from(b));
      if (err) {
        expectDocumented(err, context);
        expectNothingChanged(context);
      } else if (m === 'StartSession') {
        await stopAccepted(body!);
      }
      await expectAnswering();
    }), params(200));
  }, fuzzTimeout(120_000));
});

describe('after the fuzzing', () => {
  it('the agent still serves a normal request', async () => {
    expect(alive(agent.pid)).toBe(true);
    const { err } = await send('ListSessions', Buffer.alloc(0));
    expect(err).toBeNull();
    expect(files()).toEqual([]);
    // How many generated requests were valid in every field (each started and stopped a real desktop).
    expect(accepted).toBeGreaterThanOrEqual(0);
  });
});

function varint(n: number): number[] {
  const out: number[] = [];
  let v = n >>> 0;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return out;
}
