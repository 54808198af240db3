/**
 * The one renderer of errors: whatever is thrown, a client sees a documented code and status, and a bug never
 * shows its details (they go to the log).
 */
import { describe, expect, it } from 'vitest';
import { errorBody, toDispatchError } from '../../controller/error-reply.js';
import { NotFoundError } from '../../controller/errors.js';

describe('toDispatchError', () => {
  it('a bug becomes 500 VD_ERR_INTERNAL without its message', () => {
    const e = toDispatchError(new TypeError('secret detail at /etc/shadow'));
    expect([e.statusCode, e.code]).toEqual([500, 'VD_ERR_INTERNAL']);
    expect(JSON.stringify(errorBody(e))).not.toContain('secret');
  });

  it('a thrown non-error is a 500 too', () => {
    expect(toDispatchError('boom').code).toBe('VD_ERR_INTERNAL');
    expect(toDispatchError(null).code).toBe('VD_ERR_INTERNAL');
  });

  it('fastify\'s own errors get our codes', () => {
    expect(toDispatchError(Object.assign(new Error('too big'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 })).code).toBe('VD_ERR_PAYLOAD_TOO_LARGE');
    expect(toDispatchError(Object.assign(new Error('bad'), { validation: [{}], statusCode: 400 })).code).toBe('VD_ERR_BAD_REQUEST');
    expect(toDispatchError(Object.assign(new Error('nope'), { statusCode: 405 })).code).toBe('VD_ERR_METHOD_NOT_ALLOWED');
  });

  it('our own errors pass through with their class name', () => {
    const e = new NotFoundError('no session x');
    expect(toDispatchError(e)).toBe(e);
    expect(e.name).toBe('NotFoundError');
    expect(errorBody(e)).toEqual({ error: { code: 'VD_ERR_NOT_FOUND', message: 'no session x' } });
  });
});
