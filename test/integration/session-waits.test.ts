/**
 * A request for a user whose desktop another request (or another controller sharing the store) is still starting
 * waits for it, and says why when it cannot. The store is the real SQLite store; the other request is played by
 * reserving the user's session directly in it, as a second controller would.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BladeRegistry } from '../../controller/blades/registry.js';
import { createLogger } from '../../controller/log.js';
import { createMetrics } from '../../controller/metrics.js';
import { SessionService } from '../../controller/sessions/session-service.js';
import { createStore } from '../../controller/store/index.js';
import type { Store } from '../../controller/store/store.js';
import { TokenService } from '../../controller/tokens/index.js';
import { testUser } from '../helpers/users.js';

let dir: string;
let store: Store;
let sessions: SessionService;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vncdispatch-waits-'));
  store = createStore({ dataDir: dir });
  await store.init();
  sessions = new SessionService({
    store,
    // Never reached: the session is already reserved, so no blade is asked to start anything.
    blades: {} as BladeRegistry,
    tokens: new TokenService(store),
    config: { startAttempts: 1, startWaitMs: 300, startPollMs: 50, startAnswerMs: 45_000, maxReconnectKeys: 32 },
    log: createLogger({ logLevel: 'silent' }),
    metrics: createMetrics({ defaults: false }),
  });
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a desktop another request is starting', () => {
  it('that is still starting: 503 VD_ERR_SESSION_STARTING, retry shortly', async () => {
    await store.createSession({ id: crypto.randomUUID(), username: testUser(43), clientIp: null, now: new Date() });
    await expect(sessions.open(testUser(43), null)).rejects.toMatchObject({ code: 'VD_ERR_SESSION_STARTING', statusCode: 503 });
  });

  it('that failed to start meanwhile: 409 VD_ERR_SESSION_CONFLICT, retry', async () => {
    const { session } = await store.createSession({ id: crypto.randomUUID(), username: testUser(43), clientIp: null, now: new Date() });
    const opening = sessions.open(testUser(43), null);
    await store.endSession(session.id, 'start-failed', new Date());
    await expect(opening).rejects.toMatchObject({ code: 'VD_ERR_SESSION_CONFLICT', statusCode: 409 });
  });
});
