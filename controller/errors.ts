/**
 * Every error the controller reports, as named classes with a stable `code` and the HTTP `statusCode` it is answered
 * with (the shape undici and fastify use, so a class name in a log line says what happened: pino logs it as `type`).
 * Codes are part of the API: they appear in REST error bodies (`{ "error": { "code", "message" } }`), refused
 * WebSocket upgrades, logs and metrics, and each one is documented in README.md (test/unit/error-codes.test.ts checks
 * both ways). controller/error-reply.ts is the one place an error becomes an HTTP answer.
 */
export class VncDispatchError extends Error {
  readonly code: string;
  readonly statusCode: number;
  /**
   * For a 503 that passes: seconds after which a retry may succeed, sent as `Retry-After` (RFC 9110 §10.2.3), so a
   * portal or load balancer backs off for as long as the condition usually lasts instead of guessing.
   */
  readonly retryAfterSeconds: number | undefined = undefined;
  constructor(code: string, statusCode: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
  }
}

// Any edge: REST, web pages and refused WebSocket upgrades.
export class UnauthorizedError extends VncDispatchError {
  static readonly code = 'VD_ERR_UNAUTHORIZED';
  static readonly statusCode = 401;
  constructor(message: string = 'A valid API key is required (Authorization: Bearer <key>).', options?: ErrorOptions) {
    super(UnauthorizedError.code, UnauthorizedError.statusCode, message, options);
  }
}

export class BadRequestError extends VncDispatchError {
  static readonly code = 'VD_ERR_BAD_REQUEST';
  static readonly statusCode = 400;
  constructor(message: string = 'The request is malformed.', options?: ErrorOptions) {
    super(BadRequestError.code, BadRequestError.statusCode, message, options);
  }
}

export class NotFoundError extends VncDispatchError {
  static readonly code = 'VD_ERR_NOT_FOUND';
  static readonly statusCode = 404;
  constructor(message: string = 'Not found.', options?: ErrorOptions) {
    super(NotFoundError.code, NotFoundError.statusCode, message, options);
  }
}

/** The API key is valid but its role is below the route's (controller/api/auth.ts). */
export class ForbiddenError extends VncDispatchError {
  static readonly code = 'VD_ERR_FORBIDDEN';
  static readonly statusCode = 403;
  constructor(message: string = "The API key's role does not allow this request.", options?: ErrorOptions) {
    super(ForbiddenError.code, ForbiddenError.statusCode, message, options);
  }
}

/** GET /api/v1/events: the cap on open event streams is reached. */
export class TooManyStreamsError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOO_MANY_STREAMS';
  static readonly statusCode = 429;
  constructor(message: string = 'Too many event streams are open; try again later.', options?: ErrorOptions) {
    super(TooManyStreamsError.code, TooManyStreamsError.statusCode, message, options);
  }
}

/** DELETE /api/v1/blades/{name} without ?force=true while the blade has live sessions. */
export class BladeBusyError extends VncDispatchError {
  static readonly code = 'VD_ERR_BLADE_BUSY';
  static readonly statusCode = 409;
  constructor(message: string = 'The blade has live sessions; remove it with ?force=true to end them.', options?: ErrorOptions) {
    super(BladeBusyError.code, BladeBusyError.statusCode, message, options);
  }
}

export class MethodNotAllowedError extends VncDispatchError {
  static readonly code = 'VD_ERR_METHOD_NOT_ALLOWED';
  static readonly statusCode = 405;
  constructor(message: string = 'This method is not allowed here.', options?: ErrorOptions) {
    super(MethodNotAllowedError.code, MethodNotAllowedError.statusCode, message, options);
  }
}

export class RequestTimeoutError extends VncDispatchError {
  static readonly code = 'VD_ERR_REQUEST_TIMEOUT';
  static readonly statusCode = 408;
  constructor(message: string = 'The request was not sent in time.', options?: ErrorOptions) {
    super(RequestTimeoutError.code, RequestTimeoutError.statusCode, message, options);
  }
}

export class HeadersTooLargeError extends VncDispatchError {
  static readonly code = 'VD_ERR_HEADERS_TOO_LARGE';
  static readonly statusCode = 431;
  constructor(message: string = 'The request headers are too large.', options?: ErrorOptions) {
    super(HeadersTooLargeError.code, HeadersTooLargeError.statusCode, message, options);
  }
}

export class RateLimitedError extends VncDispatchError {
  static readonly code = 'VD_ERR_RATE_LIMITED';
  static readonly statusCode = 429;
  constructor(message: string = 'Too many requests; try again later.', options?: ErrorOptions) {
    super(RateLimitedError.code, RateLimitedError.statusCode, message, options);
  }
}

// WebSocket-to-VNC proxy (controller/proxy/): refusals answered before the upgrade, and VNC-side failures.
export class TokenRequiredError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_REQUIRED';
  static readonly statusCode = 401;
  constructor(message: string = 'A connection token is required (?token=...).', options?: ErrorOptions) {
    super(TokenRequiredError.code, TokenRequiredError.statusCode, message, options);
  }
}

export class OriginForbiddenError extends VncDispatchError {
  static readonly code = 'VD_ERR_ORIGIN_FORBIDDEN';
  static readonly statusCode = 403;
  constructor(message: string = 'This Origin may not open desktop connections.', options?: ErrorOptions) {
    super(OriginForbiddenError.code, OriginForbiddenError.statusCode, message, options);
  }
}

export class TooManyConnectionsError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOO_MANY_CONNECTIONS';
  static readonly statusCode = 429;
  constructor(message: string = 'Too many concurrent desktop connections from this address.', options?: ErrorOptions) {
    super(TooManyConnectionsError.code, TooManyConnectionsError.statusCode, message, options);
  }
}

export class TooManyBadTokensError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOO_MANY_BAD_TOKENS';
  static readonly statusCode = 429;
  constructor(message: string = 'Too many refused tokens from this address; try again later.', options?: ErrorOptions) {
    super(TooManyBadTokensError.code, TooManyBadTokensError.statusCode, message, options);
  }
}

export class ProxyUnavailableError extends VncDispatchError {
  static readonly code = 'VD_ERR_PROXY_UNAVAILABLE';
  static readonly statusCode = 503;
  /** Seconds: the token check fails only while the store is slow. */
  override readonly retryAfterSeconds = 2;
  constructor(message: string = 'The desktop proxy cannot check tokens right now.', options?: ErrorOptions) {
    super(ProxyUnavailableError.code, ProxyUnavailableError.statusCode, message, options);
  }
}

export class VncConnectError extends VncDispatchError {
  static readonly code = 'VD_ERR_VNC_CONNECT';
  static readonly statusCode = 502;
  constructor(message: string = 'The desktop cannot be reached through its blade agent.', options?: ErrorOptions) {
    super(VncConnectError.code, VncConnectError.statusCode, message, options);
  }
}

/**
 * The relay reached the blade's agent, but the agent could not connect to the desktop's socket: its Xvnc does not
 * answer (crashed, or its socket is gone) while the session is still on record.
 */
export class DesktopUnreachableError extends VncDispatchError {
  static readonly code = 'VD_ERR_DESKTOP_UNREACHABLE';
  static readonly statusCode = 502;
  constructor(message: string = 'The desktop does not answer on its blade.', options?: ErrorOptions) {
    super(DesktopUnreachableError.code, DesktopUnreachableError.statusCode, message, options);
  }
}

/** The blade's agent runs no such desktop (it ended, or the agent lost it): the session is about to be ended. */
export class DesktopNotFoundError extends VncDispatchError {
  static readonly code = 'VD_ERR_DESKTOP_NOT_FOUND';
  static readonly statusCode = 502;
  constructor(message: string = 'The blade no longer runs this desktop.', options?: ErrorOptions) {
    super(DesktopNotFoundError.code, DesktopNotFoundError.statusCode, message, options);
  }
}

/** The blade's agent accepted the relay connection but did not answer within the proxy's connect timeout. */
export class RelayTimeoutError extends VncDispatchError {
  static readonly code = 'VD_ERR_RELAY_TIMEOUT';
  static readonly statusCode = 504;
  constructor(message: string = "The blade's agent did not answer the desktop relay in time.", options?: ErrorOptions) {
    super(RelayTimeoutError.code, RelayTimeoutError.statusCode, message, options);
  }
}

export class VncHandshakeError extends VncDispatchError {
  static readonly code = 'VD_ERR_VNC_HANDSHAKE';
  static readonly statusCode = 502;
  constructor(message: string = 'The desktop server broke the RFB handshake.', options?: ErrorOptions) {
    super(VncHandshakeError.code, VncHandshakeError.statusCode, message, options);
  }
}

export class VncAuthFailedError extends VncDispatchError {
  static readonly code = 'VD_ERR_VNC_AUTH_FAILED';
  static readonly statusCode = 502;
  constructor(message: string = 'The desktop server refused the session password.', options?: ErrorOptions) {
    super(VncAuthFailedError.code, VncAuthFailedError.statusCode, message, options);
  }
}

export class BrowserHandshakeError extends VncDispatchError {
  static readonly code = 'VD_ERR_BROWSER_HANDSHAKE';
  static readonly statusCode = 400;
  constructor(message: string = 'The browser broke the RFB handshake.', options?: ErrorOptions) {
    super(BrowserHandshakeError.code, BrowserHandshakeError.statusCode, message, options);
  }
}

// REST API and dispatch (controller/api/, controller/sessions/, controller/blades/).
export class PayloadTooLargeError extends VncDispatchError {
  static readonly code = 'VD_ERR_PAYLOAD_TOO_LARGE';
  static readonly statusCode = 413;
  constructor(message: string = 'The request body is too large.', options?: ErrorOptions) {
    super(PayloadTooLargeError.code, PayloadTooLargeError.statusCode, message, options);
  }
}

export class UnsupportedMediaTypeError extends VncDispatchError {
  static readonly code = 'VD_ERR_UNSUPPORTED_MEDIA_TYPE';
  static readonly statusCode = 415;
  constructor(message: string = 'The request body must be application/json.', options?: ErrorOptions) {
    super(UnsupportedMediaTypeError.code, UnsupportedMediaTypeError.statusCode, message, options);
  }
}

export class UnknownUserError extends VncDispatchError {
  static readonly code = 'VD_ERR_UNKNOWN_USER';
  static readonly statusCode = 422;
  constructor(message: string = 'No such user on the blades.', options?: ErrorOptions) {
    super(UnknownUserError.code, UnknownUserError.statusCode, message, options);
  }
}

export class UserNotAllowedError extends VncDispatchError {
  static readonly code = 'VD_ERR_USER_NOT_ALLOWED';
  static readonly statusCode = 403;
  constructor(message: string = 'This user may not have a desktop.', options?: ErrorOptions) {
    super(UserNotAllowedError.code, UserNotAllowedError.statusCode, message, options);
  }
}

/** The blades refuse the user because of their home directory (missing, unreachable): the message says what to fix. */
export class UserHomeUnusableError extends VncDispatchError {
  static readonly code = 'VD_ERR_USER_HOME_UNUSABLE';
  static readonly statusCode = 422;
  constructor(message: string = "The user's home directory cannot be used on the blades.", options?: ErrorOptions) {
    super(UserHomeUnusableError.code, UserHomeUnusableError.statusCode, message, options);
  }
}

export class NoBladeAvailableError extends VncDispatchError {
  static readonly code = 'VD_ERR_NO_BLADE_AVAILABLE';
  static readonly statusCode = 503;
  /** Seconds: a blade frees a slot when a desktop ends or comes back UP within a few health intervals. */
  override readonly retryAfterSeconds = 5;
  constructor(message: string = 'No blade can start a desktop right now.', options?: ErrorOptions) {
    super(NoBladeAvailableError.code, NoBladeAvailableError.statusCode, message, options);
  }
}

export class SessionStartingError extends VncDispatchError {
  static readonly code = 'VD_ERR_SESSION_STARTING';
  static readonly statusCode = 503;
  /** Seconds: a start takes a fraction of a second to a few seconds on a busy blade. */
  override readonly retryAfterSeconds = 2;
  constructor(message: string = 'The session is still starting; retry shortly.', options?: ErrorOptions) {
    super(SessionStartingError.code, SessionStartingError.statusCode, message, options);
  }
}

export class SessionEndedError extends VncDispatchError {
  static readonly code = 'VD_ERR_SESSION_ENDED';
  static readonly statusCode = 410;
  constructor(message: string = 'The session has ended.', options?: ErrorOptions) {
    super(SessionEndedError.code, SessionEndedError.statusCode, message, options);
  }
}

/**
 * The viewer's reconnect, for a session whose desktop could not be started: a failure, not an end the user chose, so
 * the page says so instead of "ended". Given only to the holder of the session's reconnect key.
 */
export class SessionStartFailedError extends VncDispatchError {
  static readonly code = 'VD_ERR_SESSION_START_FAILED';
  static readonly statusCode = 410;
  constructor(message: string = 'The desktop could not be started.', options?: ErrorOptions) {
    super(SessionStartFailedError.code, SessionStartFailedError.statusCode, message, options);
  }
}

export class SessionConflictError extends VncDispatchError {
  static readonly code = 'VD_ERR_SESSION_CONFLICT';
  static readonly statusCode = 409;
  constructor(message: string = 'The session was ended or replaced while this request was opening it; retry.', options?: ErrorOptions) {
    super(SessionConflictError.code, SessionConflictError.statusCode, message, options);
  }
}

export class BladeExistsError extends VncDispatchError {
  static readonly code = 'VD_ERR_BLADE_EXISTS';
  static readonly statusCode = 409;
  constructor(message: string = 'A blade with this name is already registered at another address.', options?: ErrorOptions) {
    super(BladeExistsError.code, BladeExistsError.statusCode, message, options);
  }
}

export class BladeDownError extends VncDispatchError {
  static readonly code = 'VD_ERR_BLADE_DOWN';
  static readonly statusCode = 503;
  /** Seconds: a blade that answers again is UP within a couple of health intervals. */
  override readonly retryAfterSeconds = 5;
  constructor(message: string = "The user's desktop is on a blade that does not answer right now; retry shortly.", options?: ErrorOptions) {
    super(BladeDownError.code, BladeDownError.statusCode, message, options);
  }
}

/**
 * The store (controller/store/) cannot record a change: a full or read-only disk, an I/O error, a database file that
 * was deleted or replaced, an unreachable MongoDB. Nothing was written: the request changed nothing and may be retried.
 */
export class StoreUnavailableError extends VncDispatchError {
  static readonly code = 'VD_ERR_STORE_UNAVAILABLE';
  static readonly statusCode = 503;
  /** Seconds: a full disk or a lost database needs an operator; retries should stay sparse. */
  override readonly retryAfterSeconds = 5;
  constructor(message: string = 'The session store cannot record changes right now; nothing was changed.', options?: ErrorOptions) {
    super(StoreUnavailableError.code, StoreUnavailableError.statusCode, message, options);
  }
}

// Connection tokens (controller/tokens/): why a token was refused. 401 = present but not valid (get a new one);
// 403 = valid but not for this client.
export class TokenMalformedError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_MALFORMED';
  static readonly statusCode = 401;
  constructor(message: string = 'The connection token is malformed.', options?: ErrorOptions) {
    super(TokenMalformedError.code, TokenMalformedError.statusCode, message, options);
  }
}

export class TokenUnknownError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_UNKNOWN';
  static readonly statusCode = 401;
  constructor(message: string = 'The connection token is not known.', options?: ErrorOptions) {
    super(TokenUnknownError.code, TokenUnknownError.statusCode, message, options);
  }
}

export class TokenExpiredError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_EXPIRED';
  static readonly statusCode = 401;
  constructor(message: string = 'The connection token has expired.', options?: ErrorOptions) {
    super(TokenExpiredError.code, TokenExpiredError.statusCode, message, options);
  }
}

export class TokenRevokedError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_REVOKED';
  static readonly statusCode = 401;
  constructor(message: string = 'The connection token has been revoked.', options?: ErrorOptions) {
    super(TokenRevokedError.code, TokenRevokedError.statusCode, message, options);
  }
}

export class TokenUsedError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_USED';
  static readonly statusCode = 401;
  constructor(message: string = 'The connection token has already been used.', options?: ErrorOptions) {
    super(TokenUsedError.code, TokenUsedError.statusCode, message, options);
  }
}

export class TokenSessionEndedError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_SESSION_ENDED';
  static readonly statusCode = 401;
  constructor(message: string = "The connection token's session has ended.", options?: ErrorOptions) {
    super(TokenSessionEndedError.code, TokenSessionEndedError.statusCode, message, options);
  }
}

export class TokenIpMismatchError extends VncDispatchError {
  static readonly code = 'VD_ERR_TOKEN_IP_MISMATCH';
  static readonly statusCode = 403;
  constructor(message: string = 'The connection token was issued to another client address.', options?: ErrorOptions) {
    super(TokenIpMismatchError.code, TokenIpMismatchError.statusCode, message, options);
  }
}

export class ReconnectIpMismatchError extends VncDispatchError {
  static readonly code = 'VD_ERR_RECONNECT_IP_MISMATCH';
  static readonly statusCode = 403;
  constructor(message: string = 'This desktop link was issued for another network address; open the desktop again from the portal.', options?: ErrorOptions) {
    super(ReconnectIpMismatchError.code, ReconnectIpMismatchError.statusCode, message, options);
  }
}

// An API-key holder may not point the controller at addresses outside the blade networks (a port scanner otherwise).
export class BladeAddressNotAllowedError extends VncDispatchError {
  static readonly code = 'VD_ERR_BLADE_ADDRESS_NOT_ALLOWED';
  static readonly statusCode = 403;
  constructor(message: string = 'The blade address is outside the networks this controller may register blades in (--blade-networks).', options?: ErrorOptions) {
    super(BladeAddressNotAllowedError.code, BladeAddressNotAllowedError.statusCode, message, options);
  }
}

// A bug: the details are only in the log.
export class InternalError extends VncDispatchError {
  static readonly code = 'VD_ERR_INTERNAL';
  static readonly statusCode = 500;
  constructor(message: string = 'Internal error.', options?: ErrorOptions) {
    super(InternalError.code, InternalError.statusCode, message, options);
  }
}

/** Every class above: the documented codes (README.md) are exactly theirs. */
export const ERROR_CLASSES = [
  UnauthorizedError,
  ForbiddenError,
  TooManyStreamsError,
  BladeBusyError,
  BadRequestError,
  NotFoundError,
  MethodNotAllowedError,
  RequestTimeoutError,
  HeadersTooLargeError,
  RateLimitedError,
  TokenRequiredError,
  OriginForbiddenError,
  TooManyConnectionsError,
  TooManyBadTokensError,
  ProxyUnavailableError,
  VncConnectError,
  DesktopUnreachableError,
  DesktopNotFoundError,
  RelayTimeoutError,
  VncHandshakeError,
  VncAuthFailedError,
  BrowserHandshakeError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
  UnknownUserError,
  UserNotAllowedError,
  UserHomeUnusableError,
  NoBladeAvailableError,
  SessionStartingError,
  SessionEndedError,
  SessionStartFailedError,
  SessionConflictError,
  BladeExistsError,
  BladeDownError,
  StoreUnavailableError,
  TokenMalformedError,
  TokenUnknownError,
  TokenExpiredError,
  TokenRevokedError,
  TokenUsedError,
  TokenSessionEndedError,
  TokenIpMismatchError,
  ReconnectIpMismatchError,
  BladeAddressNotAllowedError,
  InternalError,
] as const;

/**
 * An agent call failed: the agent could not be reached or did not answer in time (`unavailable`: gRPC UNAVAILABLE,
 * DEADLINE_EXCEEDED, CANCELLED, ...), or it answered with an error status. Never sent to a client as such:
 * controller/sessions/ decides what it means for the request (try another blade, or a 4xx about the user).
 */
export class AgentCallError extends Error {
  /** The numeric gRPC status. */
  readonly grpcCode: number;
  constructor(message: string, grpcCode: number, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.grpcCode = grpcCode;
  }
}

/** The agent could not be reached or did not answer in time: another blade may still serve. */
export class AgentUnavailableError extends AgentCallError {
  constructor(message = 'The blade agent did not answer.', grpcCode = 14, options?: ErrorOptions) {
    super(message, grpcCode, options);
  }
}

/** The agent answered with an error status (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...). */
export class AgentRejectedError extends AgentCallError {
  /** The agent's own stable code (VD_AGENT_..., from the `vncdispatch-error-code` trailer), if it sent one. */
  readonly agentCode: string | null;
  constructor(message: string, grpcCode: number, options?: ErrorOptions & { agentCode?: string | null }) {
    super(message, grpcCode, options);
    this.agentCode = options?.agentCode ?? null;
  }
}
