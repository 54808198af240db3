import type { BladeAdminState, SessionPatch } from './store.js';

/** The SessionRecord fields updateSession may change, in a fixed order (both backends build their updates from it). */
export const PATCHABLE_SESSION_FIELDS = [
  'state',
  'blade',
  'agentSessionId',
  'display',
  'port',
  'pid',
  'password',
  'clientIp',
] as const satisfies readonly (keyof SessionPatch)[];

const ALLOWED = new Set<string>(PATCHABLE_SESSION_FIELDS);

/**
 * Rejects patches a backend must not apply: unknown fields (a typo would otherwise be silently dropped) and
 * `state: 'ended'`, which only endSession may set because ending also revokes the session's tokens.
 */
export function assertPatchable(patch: SessionPatch): void {
  for (const key of Object.keys(patch)) {
    if (!ALLOWED.has(key)) throw new TypeError(`updateSession cannot change ${JSON.stringify(key)}`);
  }
  if (patch.state === 'ended') throw new TypeError("updateSession cannot end a session: use endSession");
}

const ADMIN_STATES = new Set<string>(['ACTIVE', 'CORDONED', 'DRAINING'] satisfies BladeAdminState[]);

/** Rejects an admin state outside BladeAdminState (SQLite's CHECK would too; MongoDB would store anything). */
export function assertBladeAdminState(state: string): asserts state is BladeAdminState {
  if (!ADMIN_STATES.has(state)) throw new TypeError(`unknown blade admin state ${JSON.stringify(state)}`);
}

/** The reconnect-key cap passed to addReconnectKey: a positive integer (0 would retire the key just made). */
export function checkKeep(keep: number): number {
  if (!Number.isSafeInteger(keep) || keep < 1) throw new TypeError(`addReconnectKey: keep must be a positive integer, got ${keep}`);
  return keep;
}
