/** The one place where agent error codes become gRPC status codes. */
import { status, type ServiceError, Metadata } from '@grpc/grpc-js';
import { toAgentError, type AgentErrorCode } from '../errors.js';

export const GRPC_STATUS: Record<AgentErrorCode, status> = {
  VD_AGENT_INVALID_USERNAME: status.INVALID_ARGUMENT,
  VD_AGENT_INVALID_PASSWORD: status.INVALID_ARGUMENT,
  VD_AGENT_INVALID_GEOMETRY: status.INVALID_ARGUMENT,
  VD_AGENT_INVALID_DEPTH: status.INVALID_ARGUMENT,
  VD_AGENT_INVALID_ID: status.INVALID_ARGUMENT,
  VD_AGENT_INVALID_REQUEST: status.INVALID_ARGUMENT,
  VD_AGENT_USER_NOT_FOUND: status.NOT_FOUND,
  VD_AGENT_USER_FORBIDDEN: status.PERMISSION_DENIED,
  VD_AGENT_USER_ROOT_GROUP: status.PERMISSION_DENIED,
  VD_AGENT_SESSION_ID_IN_USE: status.ALREADY_EXISTS,
  VD_AGENT_SESSION_NOT_FOUND: status.NOT_FOUND,
  VD_AGENT_CAPACITY: status.RESOURCE_EXHAUSTED,
  VD_AGENT_RELAY_REFUSED: status.INVALID_ARGUMENT,
  VD_AGENT_DESKTOP_UNREACHABLE: status.UNAVAILABLE,
  VD_AGENT_HOME_UNUSABLE: status.FAILED_PRECONDITION,
  VD_AGENT_LOOKUP_FAILED: status.UNAVAILABLE,
  VD_AGENT_STATE_UNWRITABLE: status.UNAVAILABLE,
  VD_AGENT_DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  VD_AGENT_CANCELLED: status.CANCELLED,
  VD_AGENT_SHUTTING_DOWN: status.UNAVAILABLE,
  VD_AGENT_XVNC_FAILED: status.UNAVAILABLE,
  VD_AGENT_SESSION_SCRIPT_FAILED: status.UNAVAILABLE,
  VD_AGENT_INTERNAL: status.INTERNAL,
};

/** Metadata key carrying the stable error code, so clients need not parse messages. */
export const ERROR_CODE_METADATA_KEY = 'vncdispatch-error-code';

/** Converts any thrown value into a ServiceError for grpc-js (internal details stay in the agent's log). */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const e = toAgentError(err);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, e.code);
  return { code: GRPC_STATUS[e.code], details: `${e.code}: ${e.message}`, metadata };
}
