import { StoreUnavailableError } from '../errors.js';
import { isMongoUnavailable, MongoStore } from './mongo-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

export type { Store } from './store.js';
export { MongoStore } from './mongo-store.js';
export { SqliteStore, SQLITE_FILE_NAME } from './sqlite-store.js';

/** Which backend to use: the embedded SQLite file in a data directory (default), or a MongoDB deployment. */
export type StoreOptions =
  | { dataDir: string; busyTimeoutMs?: number; synchronous?: 'FULL' | 'NORMAL' }
  | { mongodbUrl: string; dbName?: string; tokenTtlGraceSeconds?: number };

/**
 * Builds the configured store. The caller still awaits `init()` (which opens the file or connects) and `close()`.
 */
export function createStore(options: StoreOptions): Store {
  if ('mongodbUrl' in options) {
    const { mongodbUrl, ...rest } = options;
    return withUnavailable(new MongoStore({ url: mongodbUrl, ...rest }), isMongoUnavailable);
  }
  // SqliteStore classifies its own failures (it also checks its file's identity).
  return new SqliteStore(options);
}

/**
 * Wraps every method of a store so that a rejection `isUnavailable` recognises becomes StoreUnavailableError
 * (503 VD_ERR_STORE_UNAVAILABLE at the edge), in one place instead of in each method.
 */
export function withUnavailable<S extends Store>(store: S, isUnavailable: (err: unknown) => boolean): S {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function' || prop === 'constructor') return value;
      return (...args: unknown[]) => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args).catch((err: unknown) => {
        if (isUnavailable(err)) throw new StoreUnavailableError(`the store cannot be reached: ${(err as Error).message}`, { cause: err });
        throw err;
      });
    },
  });
}
