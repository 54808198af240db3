/**
 * The two names that cross from the controller to the agent. Each has one strict pattern, checked at both ends: the
 * controller refuses bad input at its REST edge, and the agent, which runs as root, never trusts the controller.
 */

/**
 * POSIX-portable login names as Debian's useradd accepts them by default: no leading dash, dot or digit, at most 32
 * characters. Group names (the agent's --allow-group) follow the same rule.
 */
export const USERNAME_PATTERN = /^[a-z_][a-z0-9_-]{0,31}$/;

/** Session ids are lower-case UUIDs (the controller's, or the agent's own): safe as a file name and in a URL. */
export const SESSION_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
