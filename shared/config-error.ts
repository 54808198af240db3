/** Thrown for a bad flag or configuration value; each main prints the message and exits 2. */
export class ConfigError extends TypeError {
  override readonly name = 'ConfigError';
}
