import { MongoStore } from './mongo-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

export type { Store } from './store.js';
export { MongoStore } from './mongo-store.js';
export { SqliteStore, SQLITE_FILE_NAME } from './sqlite-store.js';

/** Which backend to use: the embedded SQLite file in a data directory (default), or a MongoDB deployment. */
export type StoreOptions =
  | { dataDir: string; busyTimeoutMs?: number }
  | { mongodbUrl: string; dbName?: string; tokenTtlGraceSeconds?: number };

/**
 * Builds the configured store. The caller still awaits `init()` (which opens the file or connects) and `close()`.
 */
export function createStore(options: StoreOptions): Store {
  if ('mongodbUrl' in options) {
    const { mongodbUrl, ...rest } = options;
    return new MongoStore({ url: mongodbUrl, ...rest });
  }
  return new SqliteStore(options);
}
