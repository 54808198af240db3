/** What the agent remembers about one desktop, persisted so a restarted agent can re-adopt it. */
export interface SessionRecord {
  id: string;
  username: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  display: number;
  port: number;
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
