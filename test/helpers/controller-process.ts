/**
 * Runs the controller for tests, two ways:
 *   - startController(): the built bin (dist/controller/main.js; run `npm run build` first) as a real process on
 *     127.0.0.1 port 0, resolved once it logs `"msg":"listening"`. Use it for restart tests and end-to-end tests.
 *   - buildController(): the same app in-process through buildApp(), listening on 127.0.0.1 port 0, for tests that
 *     want to reach inside (registry, sessions) or run many apps cheaply.
 * Both use mTLS to the agents with the test PKI's client certificate and an embedded SQLite store in `dataDir`
 * (a fresh temp dir by default).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { controllerAllocatorEnv } from '../../controller/allocator.js';
import { buildApp, type ControllerApp } from '../../controller/app.js';
import { parseConfig } from '../../controller/config.js';
import { createLogger } from '../../controller/log.js';
import { createStore } from '../../controller/store/index.js';
import type { Store } from '../../controller/store/store.js';
import type { Pki } from './certs.js';
import { repoRoot, startNodeService } from './node-service.js';

export const CONTROLLER_MAIN = resolve(repoRoot(), 'dist', 'controller', 'main.js');

export interface ControllerOptions {
  /** Blades given as --blade NAME=ADDRESS. */
  blades?: { name: string; address: string }[];
  pki: Pki;
  /** Extra flags, after the defaults (they may repeat a default flag only where it is repeatable). */
  args?: string[];
  /** Embedded store directory; reuse one to test restarts. Default: a fresh temp dir. */
  dataDir?: string;
  /** Default: a fresh random key. */
  apiKey?: string;
  timeoutMs?: number;
  /**
   * startController only: run it in a session of its own whose autogroup gets this nice value, as a controller on a
   * machine of its own would get its CPU. Under autogroup every desktop is a scheduling group as heavy as the test
   * runner's whole group, so 200 desktops starting beside a controller in the runner's group starve it (its health
   * checks and gRPC deadlines fire seconds late) in a way no production controller is.
   */
  ownCpuGroupNice?: number;
  /** buildController only: wraps the real store (to make one of its writes fail on purpose). */
  wrapStore?: (store: Store) => Store;
}

export interface ControllerHandle {
  url: string;
  apiKey: string;
  dataDir: string;
  /** Headers with the API key (and JSON content type). */
  headers: Record<string, string>;
  logs: string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface ControllerProcess extends ControllerHandle {
  pid: number;
}

export interface InProcessController extends ControllerHandle {
  controller: ControllerApp;
  store: Store;
}

/** The API key travels in the environment, as production should pass it: never on a command line `ps` shows. */
function keyEnv(apiKey: string): Record<string, string> {
  return { VNCDISPATCH_API_KEYS: apiKey };
}

function baseArgs(o: ControllerOptions, dataDir: string): string[] {
  return [
    '--listen', '127.0.0.1:0', '--data-dir', dataDir,
    '--agent-tls-cert', o.pki.clientCert, '--agent-tls-key', o.pki.clientKey, '--agent-tls-ca', o.pki.caCert,
    // Tests want quick health transitions; these are the defaults' order of magnitude, not faster than real use.
    '--health-interval-ms', '500', '--down-after-ms', '2500',
    ...(o.blades ?? []).flatMap((b) => ['--blade', `${b.name}=${b.address}`]),
    ...(o.args ?? []),
  ];
}

function headersFor(apiKey: string): Record<string, string> {
  return { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
}

/** Starts dist/controller/main.js and resolves once it listens. */
export async function startController(o: ControllerOptions): Promise<ControllerProcess> {
  const apiKey = o.apiKey ?? randomBytes(24).toString('base64url');
  const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'vncdispatch-controller-'));
  const service = await startNodeService('controller', CONTROLLER_MAIN, baseArgs(o, dataDir),
    // On jemalloc where it is installed, as the systemd unit and `vncdispatch up` run it (controller/allocator.ts).
    { timeoutMs: o.timeoutMs, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...keyEnv(apiKey), ...controllerAllocatorEnv({}) },
      ...(o.ownCpuGroupNice !== undefined && { prefix: ['setsid'] }) });
  if (o.ownCpuGroupNice !== undefined) writeFileSync(`/proc/${service.pid}/autogroup`, String(o.ownCpuGroupNice));
  return { url: `http://${service.address}`, apiKey, dataDir, headers: headersFor(apiKey), logs: service.logs,
    pid: service.pid, stop: service.stop };
}

/** Builds the controller in this process (buildApp) and listens on 127.0.0.1 port 0. */
export async function buildController(o: ControllerOptions): Promise<InProcessController> {
  const apiKey = o.apiKey ?? randomBytes(24).toString('base64url');
  const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'vncdispatch-controller-'));
  const config = parseConfig(baseArgs(o, dataDir), keyEnv(apiKey))!;
  const logs: string[] = [];
  const log = createLogger({ logLevel: 'info' }, { write: (line: string) => void logs.push(line.trimEnd()) });
  const store = createStore({ dataDir });
  await store.init();
  const controller = await buildApp({ config, store: o.wrapStore ? o.wrapStore(store) : store, log });
  await controller.app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = controller.app.server.address() as AddressInfo;
  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`, apiKey, dataDir, headers: headersFor(apiKey), logs, controller, store,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await controller.close();
      await store.close();
    },
  };
}
