/**
 * Every error the controller reports, with a stable code. Codes are part of the API: they appear in REST error
 * bodies (`{ "error": { "code", "message" } }`), in logs and in metrics, and each one is documented in README.md
 * (test/unit/error-codes.test.ts checks that). HTTP statuses are attached here and applied only at the edge
 * (controller/api/ for REST, controller/proxy/ for WebSocket upgrades).
 */
export class VncDispatchError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VncDispatchError';
    this.code = code;
    this.status = status;
  }
}

type ErrorClass = new (message?: string, options?: { cause?: unknown }) => VncDispatchError;

function define(code: string, status: number, defaultMessage: string): ErrorClass {
  return class extends VncDispatchError {
    static readonly code = code;
    constructor(message: string = defaultMessage, options?: { cause?: unknown }) {
      super(code, status, message, options);
    }
  };
}

/** code -> [HTTP status, default message]. Add new codes here (and to README.md). */
export const ERROR_CODES = {
  VD_ERR_UNAUTHORIZED: [401, 'A valid API key is required (Authorization: Bearer <key>).'],
  VD_ERR_BAD_REQUEST: [400, 'The request is malformed.'],
  VD_ERR_NOT_FOUND: [404, 'Not found.'],
} as const satisfies Record<string, readonly [number, string]>;

export const UnauthorizedError = define('VD_ERR_UNAUTHORIZED', ...ERROR_CODES.VD_ERR_UNAUTHORIZED);
export const BadRequestError = define('VD_ERR_BAD_REQUEST', ...ERROR_CODES.VD_ERR_BAD_REQUEST);
export const NotFoundError = define('VD_ERR_NOT_FOUND', ...ERROR_CODES.VD_ERR_NOT_FOUND);
