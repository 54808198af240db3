/** Small helpers for controller tests: REST calls with the API key, and counting real Xvnc processes. */
import { readdirSync, readFileSync } from 'node:fs';
import { waitFor } from './agent-process.js';
import type { ControllerHandle } from './controller-process.js';

export interface Json {
  status: number;
  body: any;
  text: string;
  headers?: Headers;
}

/** Calls the controller with its API key; bodies are JSON. */
export async function api(c: ControllerHandle, method: string, path: string, body?: unknown): Promise<Json> {
  const headers: Record<string, string> = { authorization: c.headers.authorization! };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${c.url}${path}`, { method, headers, ...(body !== undefined && { body: JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, body: jsonOrNull(text), text, headers: res.headers };
}

/** `text` parsed as JSON, or null if it is not JSON (an answer's body as tests read it). */
export function jsonOrNull(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Polls GET /api/v1/blades until every named blade has the state. */
export async function waitForBladeStates(c: ControllerHandle, states: Record<string, string>, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => {
    const r = await api(c, 'GET', '/api/v1/blades');
    const byName = new Map<string, string>((r.body?.blades ?? []).map((b: { name: string; state: string }) => [b.name, b.state]));
    return Object.entries(states).every(([n, s]) => byName.get(n) === s);
  }, `blades ${JSON.stringify(states)}`, timeoutMs);
}

/** Pids of live Xvnc processes whose real uid is in `uids`. */
export function xvncPidsOf(uids: ReadonlySet<number>): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (!['Xvnc', 'Xtigervnc'].includes(readFileSync(`/proc/${name}/comm`, 'utf8').trim())) continue;
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const uid = Number(/^Uid:\s*(\d+)/m.exec(status)?.[1]);
      const state = /^State:\s*(\S)/m.exec(status)?.[1];
      if (uids.has(uid) && state !== 'Z') out.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return out;
}
