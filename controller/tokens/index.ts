export { TokenService, tokenRejectionError, type Clock, type ConsumedToken, type IssuedToken, type TokenServiceOptions } from './token-service.js';
export { hashSecret, isWellFormedSecret, newReconnectKey, newSecret, newToken, SECRET_BYTES } from './secrets.js';
export { normalizeIp, sameIp } from './client-ip.js';
export { newVncPassword, VNC_PASSWORD_ALPHABET, VNC_PASSWORD_LENGTH } from './vnc-password.js';
