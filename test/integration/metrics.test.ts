/**
 * Metrics an operator scrapes: the controller's /metrics and an agent's opt-in --metrics-listen endpoint, each after
 * real work (a real agent and Xvnc as vdtest89/vdtest90), pass Debian's `promtool check metrics`, carry one prefix
 * and the series the alert rules and the Grafana dashboard use; the shipped alert rules pass `promtool check rules`.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentClient, call, startAgent, waitFor, type AgentClient, type AgentProcess } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { repoRoot } from '../helpers/node-service.js';
import { freeLoopbackPort } from '../helpers/ports.js';
import { testUser } from '../helpers/users.js';

const MONITORING = resolve(repoRoot(), 'controller', 'monitoring');
const RULES = resolve(MONITORING, 'vncdispatch-alerts.yml');
const GRAFANA = resolve(MONITORING, 'grafana-dashboard.json');

let agent: AgentProcess;
let client: AgentClient;
let ctl: ControllerProcess;
let agentMetricsUrl: string;

/** Runs `promtool check metrics` on an exposition; resolves with its output (it exits non-zero on any problem). */
function promtoolCheckMetrics(text: string): Promise<string> {
  return new Promise((res, rej) => {
    const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) =>
      (err ? rej(new Error(`promtool: ${stdout}${stderr}`)) : res(`${stdout}${stderr}`)));
    child.stdin!.end(text);
  });
}

function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

function metricNames(text: string): Set<string> {
  return new Set(text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]!));
}

/** Metric names an expression uses (identifiers followed by `{`, `[`, a space or the end, that are not functions or keywords). */
function namesIn(expr: string): string[] {
  return [...expr.matchAll(/\bvncdispatch_[a-z0-9_]+/g)].map((m) => m[0]);
}

const scrape = async (url: string): Promise<string> => (await fetch(url)).text();

beforeAll(async () => {
  const pki = makePki();
  const port = await freeLoopbackPort();
  agent = await startAgent({ pki, args: ['--metrics-listen', `127.0.0.1:${port}`, '--max-sessions', '9'] });
  agentMetricsUrl = `http://127.0.0.1:${port}/metrics`;
  client = agentClient(`127.0.0.1:${agent.port}`, pki);
  ctl = await startController({ pki, blades: [{ name: 'metrics-blade', address: `127.0.0.1:${agent.port}` }] });
  await waitFor(async () => (await (await fetch(`${ctl.url}/api/v1/blades/metrics-blade`, { headers: ctl.headers })).json()).state === 'UP',
    'the blade to be UP', 15_000);
}, 60_000);

afterAll(async () => {
  client?.close();
  await ctl?.stop();
  await agent?.stop();
}, 30_000);

describe('the controller /metrics', () => {
  it('passes promtool after real work, with one prefix, blade admin state and capacity, and end reasons', async () => {
    const post = await fetch(`${ctl.url}/api/v1/sessions`, { method: 'POST', headers: ctl.headers, body: JSON.stringify({ username: testUser(89) }) });
    expect(post.status).toBe(201);
    const { id } = await post.json() as { id: string };
    expect((await fetch(`${ctl.url}/api/v1/sessions/${id}`, { method: 'DELETE', headers: { authorization: ctl.headers.authorization! } })).status).toBe(200);
    expect((await fetch(`${ctl.url}/api/v1/blades/metrics-blade/cordon`, { method: 'POST', headers: { authorization: ctl.headers.authorization! } })).status).toBe(200);
    // A refused desktop connection, so the proxy's labelled counters have samples too.
    await fetch(`${ctl.url}/websockify?token=bad`, { headers: { connection: 'Upgrade', upgrade: 'websocket' } }).catch(() => undefined);

    const text = await scrape(`${ctl.url}/metrics`);
    await promtoolCheckMetrics(text);
    for (const name of metricNames(text)) expect(name).toMatch(/^vncdispatch_/);
    expect(sample(text, 'vncdispatch_blade_admin_state', { blade: 'metrics-blade', state: 'CORDONED' })).toBe(1);
    expect(sample(text, 'vncdispatch_blade_admin_state', { blade: 'metrics-blade', state: 'ACTIVE' })).toBe(0);
    expect(sample(text, 'vncdispatch_blade_capacity', { blade: 'metrics-blade' })).toBe(9);
    expect(sample(text, 'vncdispatch_sessions_ended_total', { reason: 'deleted' })).toBe(1);
    expect(sample(text, 'vncdispatch_sessions_ended_total', { reason: 'desktop-exited' })).toBe(0);
    expect(sample(text, 'vncdispatch_session_start_seconds_count', { result: 'created' })).toBe(1);
    await fetch(`${ctl.url}/api/v1/blades/metrics-blade/uncordon`, { method: 'POST', headers: { authorization: ctl.headers.authorization! } });
  });
});

describe('the agent --metrics-listen endpoint', () => {
  it('counts desktops, start latency, spawn failures, stops and reaps, and passes promtool', async () => {
    // Counters only grow and other tests here use the same agent: compare with what they were before.
    const before = await scrape(agentMetricsUrl);
    const was = (name: string, labels: Record<string, string> = {}): number => sample(before, name, labels) ?? 0;
    const started = await call(client, client.startSession, { username: testUser(90), password: 'pw123456' });
    let text = await scrape(agentMetricsUrl);
    expect(sample(text, 'vncdispatch_agent_sessions')).toBe(was('vncdispatch_agent_sessions') + 1);
    expect(sample(text, 'vncdispatch_agent_capacity')).toBe(9);
    expect(sample(text, 'vncdispatch_agent_session_start_seconds_count', { result: 'ok' }))
      .toBe(was('vncdispatch_agent_session_start_seconds_count', { result: 'ok' }) + 1);

    await expect(call(client, client.startSession, { username: 'nosuchuser-metrics', password: 'pw123456' })).rejects.toThrow();
    // The desktop exits on its own (its Xvnc is killed): the agent reaps it.
    process.kill(started.session!.pid, 'SIGKILL');
    const reaped = was('vncdispatch_agent_sessions_ended_total', { how: 'reaped' }) + 1;
    await waitFor(async () => sample(await scrape(agentMetricsUrl), 'vncdispatch_agent_sessions_ended_total', { how: 'reaped' }) === reaped,
      'the reap to be counted', 10_000);
    text = await scrape(agentMetricsUrl);
    expect(sample(text, 'vncdispatch_agent_spawn_failures_total', { code: 'VD_AGENT_USER_NOT_FOUND' }))
      .toBe(was('vncdispatch_agent_spawn_failures_total', { code: 'VD_AGENT_USER_NOT_FOUND' }) + 1);
    expect(sample(text, 'vncdispatch_agent_sessions')).toBe(was('vncdispatch_agent_sessions'));
    const again = await call(client, client.startSession, { username: testUser(90), password: 'pw123456' });
    await call(client, client.stopSession, { id: again.session!.id });
    text = await scrape(agentMetricsUrl);
    expect(sample(text, 'vncdispatch_agent_sessions_ended_total', { how: 'stopped' }))
      .toBe(was('vncdispatch_agent_sessions_ended_total', { how: 'stopped' }) + 1);
    await promtoolCheckMetrics(text);
    for (const name of metricNames(text)) expect(name).toMatch(/^vncdispatch_agent_/);
  });

  it('is off unless asked for: no metrics server without the flag', async () => {
    expect(agent.logs.some((l) => l.includes('"metrics listening"'))).toBe(true);
    const pki = makePki();
    const plain = await startAgent({ pki });
    try {
      expect(plain.logs.some((l) => l.includes('metrics listening'))).toBe(false);
    } finally {
      await plain.stop();
    }
  });
});

describe('shipped alert rules and Grafana dashboard', () => {
  it('the alert rules pass promtool check rules and use only series the controller and agents export', async () => {
    const { stdout } = await promisify(execFile)('promtool', ['check', 'rules', RULES]);
    expect(stdout).toContain('SUCCESS: 4 rules found');
    const known = new Set([...metricNames(await scrape(`${ctl.url}/metrics`)), ...metricNames(await scrape(agentMetricsUrl))]);
    const rules = readFileSync(RULES, 'utf8');
    for (const alert of ['VncdispatchBladeDown', 'VncdispatchNoCapacityLeft', 'VncdispatchSessionStartErrors', 'VncdispatchAgentSpawnFailures']) {
      expect(rules).toContain(`alert: ${alert}`);
    }
    for (const name of namesIn(rules)) expect(known, name).toContain(name.replace(/_(bucket|count|sum)$/, ''));
  });

  it('the Grafana dashboard is JSON whose every query uses only exported series', async () => {
    const dash = JSON.parse(readFileSync(GRAFANA, 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const known = new Set([...metricNames(await scrape(`${ctl.url}/metrics`)), ...metricNames(await scrape(agentMetricsUrl))]);
    expect(dash.panels.length).toBeGreaterThan(5);
    for (const p of dash.panels) {
      for (const t of p.targets) for (const name of namesIn(t.expr)) expect(known, `${p.title}: ${name}`).toContain(name.replace(/_(bucket|count|sum)$/, ''));
    }
  });
});
