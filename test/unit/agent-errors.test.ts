/** Every agent error code has a message and a gRPC status, and reaches the client with its code. */
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { AgentError, AgentErrorCodes, type AgentErrorCode } from '../../agent/errors.js';
import { ERROR_CODE_METADATA_KEY, GRPC_STATUS, toServiceError } from '../../agent/grpc/status-map.js';

const codes = Object.keys(AgentErrorCodes) as AgentErrorCode[];

describe('agent errors', () => {
  it('use stable VD_AGENT_ codes, each with a message and a gRPC status', () => {
    for (const c of codes) {
      expect(c).toMatch(/^VD_AGENT_[A-Z_]+$/);
      expect(AgentErrorCodes[c].length).toBeGreaterThan(5);
      expect(GRPC_STATUS[c]).toBeTypeOf('number');
    }
    expect(Object.keys(GRPC_STATUS).sort()).toEqual([...codes].sort());
  });

  it('map the documented statuses', () => {
    expect(GRPC_STATUS.VD_AGENT_INVALID_USERNAME).toBe(status.INVALID_ARGUMENT);
    expect(GRPC_STATUS.VD_AGENT_USER_NOT_FOUND).toBe(status.NOT_FOUND);
    expect(GRPC_STATUS.VD_AGENT_USER_FORBIDDEN).toBe(status.PERMISSION_DENIED);
    expect(GRPC_STATUS.VD_AGENT_CAPACITY).toBe(status.RESOURCE_EXHAUSTED);
    expect(GRPC_STATUS.VD_AGENT_XVNC_FAILED).toBe(status.UNAVAILABLE);
  });

  it('carry the code in details and metadata; unknown errors become INTERNAL without their message', () => {
    const e = toServiceError(new AgentError('VD_AGENT_CAPACITY', 'full'));
    expect(e).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: 'VD_AGENT_CAPACITY: full' });
    expect(e.metadata!.get(ERROR_CODE_METADATA_KEY)).toEqual(['VD_AGENT_CAPACITY']);
    const internal = toServiceError(new Error('secret internals at /root/x'));
    expect(internal.code).toBe(status.INTERNAL);
    expect(internal.details).not.toContain('/root/x');
  });
});
