/** What the agent remembers about one desktop, persisted so a restarted agent can re-adopt it. */
export interface SessionRecord {
  /** Chosen by the controller (StartSession's session_id, its idempotency key), or by the agent when none is sent. */
  id: string;
  /**
   * `starting`: written before anything is spawned (the intent); a restarted agent that finds one kills whatever the
   * start had spawned. `running`: written once the desktop is ready, before StartSession answers. Records from
   * before this field existed are running.
   */
  state?: 'starting' | 'running' | undefined;
  username: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /** The session's runtime directory (vnc/runtime-dir.ts); absent in records written before it existed. */
  runtimeDir?: string | undefined;
  display: number;
  /** Xvnc. */
  pid: number;
  /** /proc/PID/stat field 22 of Xvnc: with pid, identifies it even after the pid is recycled. */
  pidStartTime: number;
  /** The session script, leader of its own process group. */
  scriptPid: number;
  scriptStartTime: number;
  /** ISO 8601. */
  startedAt: string;
  geometry: string;
  depth: number;
}
