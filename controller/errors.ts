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
  VD_ERR_RATE_LIMITED: [429, 'Too many requests; try again later.'],
  // WebSocket-to-VNC proxy (controller/proxy/): refusals answered before the upgrade, and VNC-side failures.
  VD_ERR_TOKEN_REQUIRED: [401, 'A connection token is required (?token=...).'],
  VD_ERR_ORIGIN_FORBIDDEN: [403, 'This Origin may not open desktop connections.'],
  VD_ERR_TOO_MANY_CONNECTIONS: [429, 'Too many concurrent desktop connections from this address.'],
  VD_ERR_TOO_MANY_BAD_TOKENS: [429, 'Too many refused tokens from this address; try again later.'],
  VD_ERR_PROXY_UNAVAILABLE: [503, 'The desktop proxy cannot check tokens right now.'],
  VD_ERR_VNC_CONNECT: [502, 'The desktop cannot be reached.'],
  VD_ERR_VNC_HANDSHAKE: [502, 'The desktop server broke the RFB handshake.'],
  VD_ERR_VNC_AUTH_FAILED: [502, 'The desktop server refused the session password.'],
  VD_ERR_BROWSER_HANDSHAKE: [400, 'The browser broke the RFB handshake.'],
  // REST API and dispatch (controller/api/, controller/sessions/, controller/blades/, controller/agent-client/).
  VD_ERR_PAYLOAD_TOO_LARGE: [413, 'The request body is too large.'],
  VD_ERR_UNSUPPORTED_MEDIA_TYPE: [415, 'The request body must be application/json.'],
  VD_ERR_UNKNOWN_USER: [422, 'No such user on the blades.'],
  VD_ERR_USER_NOT_ALLOWED: [403, 'This user may not have a desktop.'],
  VD_ERR_AGENT_REJECTED: [422, 'The blade agent refused the request.'],
  VD_ERR_AGENT_UNAVAILABLE: [503, 'The blade agent did not answer.'],
  VD_ERR_NO_BLADE_AVAILABLE: [503, 'No blade can start a desktop right now.'],
  VD_ERR_SESSION_STARTING: [503, 'The session is still starting; retry shortly.'],
  VD_ERR_SESSION_ENDED: [410, 'The session has ended.'],
  VD_ERR_SESSION_CONFLICT: [409, 'The session was ended or replaced while this request was opening it; retry.'],
  VD_ERR_BLADE_EXISTS: [409, 'A blade with this name is already registered at another address.'],
  // Connection tokens (controller/tokens/): why a token was refused. 401 = present but not valid (get a new one);
  // 403 = valid but not for this client or this session.
  VD_ERR_TOKEN_MALFORMED: [401, 'The connection token is malformed.'],
  VD_ERR_TOKEN_UNKNOWN: [401, 'The connection token is not known.'],
  VD_ERR_TOKEN_EXPIRED: [401, 'The connection token has expired.'],
  VD_ERR_TOKEN_REVOKED: [401, 'The connection token has been revoked.'],
  VD_ERR_TOKEN_USED: [401, 'The connection token has already been used.'],
  VD_ERR_TOKEN_SESSION_ENDED: [401, "The connection token's session has ended."],
  VD_ERR_TOKEN_IP_MISMATCH: [403, 'The connection token was issued to another client address.'],
  VD_ERR_TOKEN_WRONG_SESSION: [403, 'The connection token belongs to another session.'],
  VD_ERR_INTERNAL: [500, 'Internal error.'],
} as const satisfies Record<string, readonly [number, string]>;

export const UnauthorizedError = define('VD_ERR_UNAUTHORIZED', ...ERROR_CODES.VD_ERR_UNAUTHORIZED);
export const BadRequestError = define('VD_ERR_BAD_REQUEST', ...ERROR_CODES.VD_ERR_BAD_REQUEST);
export const NotFoundError = define('VD_ERR_NOT_FOUND', ...ERROR_CODES.VD_ERR_NOT_FOUND);
export const RateLimitedError = define('VD_ERR_RATE_LIMITED', ...ERROR_CODES.VD_ERR_RATE_LIMITED);
export const TokenRequiredError = define('VD_ERR_TOKEN_REQUIRED', ...ERROR_CODES.VD_ERR_TOKEN_REQUIRED);
export const OriginForbiddenError = define('VD_ERR_ORIGIN_FORBIDDEN', ...ERROR_CODES.VD_ERR_ORIGIN_FORBIDDEN);
export const TooManyConnectionsError = define('VD_ERR_TOO_MANY_CONNECTIONS', ...ERROR_CODES.VD_ERR_TOO_MANY_CONNECTIONS);
export const TooManyBadTokensError = define('VD_ERR_TOO_MANY_BAD_TOKENS', ...ERROR_CODES.VD_ERR_TOO_MANY_BAD_TOKENS);
export const ProxyUnavailableError = define('VD_ERR_PROXY_UNAVAILABLE', ...ERROR_CODES.VD_ERR_PROXY_UNAVAILABLE);
export const VncConnectError = define('VD_ERR_VNC_CONNECT', ...ERROR_CODES.VD_ERR_VNC_CONNECT);
export const VncHandshakeError = define('VD_ERR_VNC_HANDSHAKE', ...ERROR_CODES.VD_ERR_VNC_HANDSHAKE);
export const VncAuthFailedError = define('VD_ERR_VNC_AUTH_FAILED', ...ERROR_CODES.VD_ERR_VNC_AUTH_FAILED);
export const BrowserHandshakeError = define('VD_ERR_BROWSER_HANDSHAKE', ...ERROR_CODES.VD_ERR_BROWSER_HANDSHAKE);
export const PayloadTooLargeError = define('VD_ERR_PAYLOAD_TOO_LARGE', ...ERROR_CODES.VD_ERR_PAYLOAD_TOO_LARGE);
export const UnsupportedMediaTypeError = define('VD_ERR_UNSUPPORTED_MEDIA_TYPE', ...ERROR_CODES.VD_ERR_UNSUPPORTED_MEDIA_TYPE);
export const UnknownUserError = define('VD_ERR_UNKNOWN_USER', ...ERROR_CODES.VD_ERR_UNKNOWN_USER);
export const UserNotAllowedError = define('VD_ERR_USER_NOT_ALLOWED', ...ERROR_CODES.VD_ERR_USER_NOT_ALLOWED);
export const NoBladeAvailableError = define('VD_ERR_NO_BLADE_AVAILABLE', ...ERROR_CODES.VD_ERR_NO_BLADE_AVAILABLE);
export const SessionStartingError = define('VD_ERR_SESSION_STARTING', ...ERROR_CODES.VD_ERR_SESSION_STARTING);
export const SessionEndedError = define('VD_ERR_SESSION_ENDED', ...ERROR_CODES.VD_ERR_SESSION_ENDED);
export const SessionConflictError = define('VD_ERR_SESSION_CONFLICT', ...ERROR_CODES.VD_ERR_SESSION_CONFLICT);
export const BladeExistsError = define('VD_ERR_BLADE_EXISTS', ...ERROR_CODES.VD_ERR_BLADE_EXISTS);
export const TokenMalformedError = define('VD_ERR_TOKEN_MALFORMED', ...ERROR_CODES.VD_ERR_TOKEN_MALFORMED);
export const TokenUnknownError = define('VD_ERR_TOKEN_UNKNOWN', ...ERROR_CODES.VD_ERR_TOKEN_UNKNOWN);
export const TokenExpiredError = define('VD_ERR_TOKEN_EXPIRED', ...ERROR_CODES.VD_ERR_TOKEN_EXPIRED);
export const TokenRevokedError = define('VD_ERR_TOKEN_REVOKED', ...ERROR_CODES.VD_ERR_TOKEN_REVOKED);
export const TokenUsedError = define('VD_ERR_TOKEN_USED', ...ERROR_CODES.VD_ERR_TOKEN_USED);
export const TokenSessionEndedError = define('VD_ERR_TOKEN_SESSION_ENDED', ...ERROR_CODES.VD_ERR_TOKEN_SESSION_ENDED);
export const TokenIpMismatchError = define('VD_ERR_TOKEN_IP_MISMATCH', ...ERROR_CODES.VD_ERR_TOKEN_IP_MISMATCH);
export const TokenWrongSessionError = define('VD_ERR_TOKEN_WRONG_SESSION', ...ERROR_CODES.VD_ERR_TOKEN_WRONG_SESSION);
export const InternalError = define('VD_ERR_INTERNAL', ...ERROR_CODES.VD_ERR_INTERNAL);

/**
 * An agent call failed because the agent could not be reached or did not answer in time (gRPC UNAVAILABLE,
 * DEADLINE_EXCEEDED, CANCELLED, ...): another blade may still serve. `grpcCode` is the numeric gRPC status.
 */
export class AgentUnavailableError extends VncDispatchError {
  static readonly code = 'VD_ERR_AGENT_UNAVAILABLE';
  readonly grpcCode: number;
  constructor(message: string = ERROR_CODES.VD_ERR_AGENT_UNAVAILABLE[1], grpcCode = 14, options?: { cause?: unknown }) {
    super('VD_ERR_AGENT_UNAVAILABLE', ERROR_CODES.VD_ERR_AGENT_UNAVAILABLE[0], message, options);
    this.grpcCode = grpcCode;
  }
}

/**
 * The agent answered with an error status (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...).
 * `grpcCode` is the numeric gRPC status; controller/sessions/ decides what it means for the request.
 */
export class AgentRejectedError extends VncDispatchError {
  static readonly code = 'VD_ERR_AGENT_REJECTED';
  readonly grpcCode: number;
  /** The agent's own stable code (VD_AGENT_..., from the `vncdispatch-error-code` trailer), if it sent one. */
  readonly agentCode: string | null;
  constructor(message: string, grpcCode: number, options?: { cause?: unknown; agentCode?: string | null }) {
    super('VD_ERR_AGENT_REJECTED', ERROR_CODES.VD_ERR_AGENT_REJECTED[0], message, options);
    this.grpcCode = grpcCode;
    this.agentCode = options?.agentCode ?? null;
  }
}
