/**
 * Turns grpc-js ServiceErrors into the controller's own errors, in one place: callers see AgentUnavailableError
 * (could not reach or no answer: try elsewhere) or AgentRejectedError (the agent answered no, with its gRPC code).
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import { AgentCallError, AgentRejectedError, AgentUnavailableError } from '../errors.js';

/** The trailer in which the agent sends its stable error code (agent/grpc/status-map.ts). */
const AGENT_ERROR_CODE_KEY = 'vncdispatch-error-code';

/** Statuses meaning "the agent did not (properly) answer": transport trouble, not a decision about the request. */
const UNAVAILABLE_CODES = new Set<number>([
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
  status.CANCELLED,
  status.UNKNOWN,
  status.INTERNAL,
  status.UNAUTHENTICATED,
  status.UNIMPLEMENTED,
]);

/** Name of a numeric gRPC status, e.g. 5 -> 'NOT_FOUND'. */
export function grpcStatusName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number';
}

/** Converts whatever a grpc-js call rejected with into an AgentCallError, naming the blade and method. */
export function toControllerError(err: unknown, blade: string, method: string): AgentCallError {
  if (err instanceof AgentCallError) return err;
  if (!isServiceError(err)) {
    return new AgentUnavailableError(`blade ${blade}: ${method} failed: ${String((err as Error)?.message ?? err)}`,
      status.UNKNOWN, { cause: err });
  }
  const detail = err.details || err.message;
  if (UNAVAILABLE_CODES.has(err.code)) {
    return new AgentUnavailableError(`blade ${blade}: ${method}: ${grpcStatusName(err.code)}: ${detail}`, err.code, { cause: err });
  }
  const agentCode = err.metadata?.get(AGENT_ERROR_CODE_KEY)[0];
  return new AgentRejectedError(`blade ${blade}: ${method}: ${detail}`, err.code,
    { cause: err, agentCode: typeof agentCode === 'string' ? agentCode : null });
}
