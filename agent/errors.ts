/**
 * Every failure the agent reports, with a stable code. The gRPC status for each code is chosen in one place at the
 * edge (grpc/status-map.ts); the rest of the agent only throws AgentError.
 */

/** Stable error codes; the string after `VD_AGENT_` never changes meaning. */
export const AgentErrorCodes = {
  VD_AGENT_INVALID_USERNAME: 'the username is not a valid Unix account name',
  VD_AGENT_INVALID_PASSWORD: 'the VNC password must be 1 to 8 printable ASCII characters',
  VD_AGENT_INVALID_GEOMETRY: 'the geometry must be WIDTHxHEIGHT within bounds',
  VD_AGENT_INVALID_DEPTH: 'the depth must be 16, 24 or 32',
  VD_AGENT_INVALID_ID: 'the session id is not valid',
  VD_AGENT_INVALID_REQUEST: 'the request message could not be decoded',
  VD_AGENT_USER_NOT_FOUND: 'no such user on this blade',
  VD_AGENT_USER_FORBIDDEN: 'this user may not have a desktop on this blade',
  VD_AGENT_USER_ROOT_GROUP: 'the user is in group root (gid 0); --allow-root-group admits such users',
  VD_AGENT_SESSION_ID_IN_USE: 'this session id belongs to a desktop of another user',
  VD_AGENT_SESSION_NOT_FOUND: 'no such session',
  VD_AGENT_CAPACITY: 'this blade is running its maximum number of sessions',
  VD_AGENT_HOME_UNUSABLE: "the user's home directory is missing, not enterable by the user, or not answering",
  VD_AGENT_LOOKUP_FAILED: 'the user database did not answer in time',
  VD_AGENT_STATE_UNWRITABLE: "the agent cannot write its session records or runtime files (disk full?)",
  VD_AGENT_DEADLINE_EXCEEDED: "the call's deadline passed before the desktop was ready; nothing was left running",
  VD_AGENT_CANCELLED: 'the caller cancelled the call; nothing was left running',
  VD_AGENT_SHUTTING_DOWN: 'the agent is shutting down and starts no new desktops',
  VD_AGENT_XVNC_FAILED: 'the VNC server failed to start',
  VD_AGENT_SESSION_SCRIPT_FAILED: 'the session script failed to start or exited at once',
  VD_AGENT_RELAY_REFUSED: 'the relay request was malformed or too slow',
  VD_AGENT_DESKTOP_UNREACHABLE: "the desktop's socket does not answer",
  VD_AGENT_INTERNAL: 'internal agent error',
} as const;

export type AgentErrorCode = keyof typeof AgentErrorCodes;

/** An error the agent reports to its caller; `message` is meant for a person and never contains a password. */
export class AgentError extends Error {
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string = AgentErrorCodes[code], options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AgentError';
    this.code = code;
  }
}

/** Returns `err` if it is an AgentError, otherwise wraps it as VD_AGENT_INTERNAL (keeping the cause for logs). */
export function toAgentError(err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  return new AgentError('VD_AGENT_INTERNAL', AgentErrorCodes.VD_AGENT_INTERNAL, { cause: err });
}
