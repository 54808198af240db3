/**
 * Session records on disk: one JSON file per session in the state directory (root-only). Each write is durable before
 * it returns (written to a temporary file, fsync'd, renamed, directory fsync'd): a record the agent relies on after a
 * crash (an intent before anything is spawned, a desktop before StartSession answers) is on disk, not in a page cache.
 */
import { chmod, mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { SessionRecord } from './record.js';

const ID = /^[0-9a-f-]{36}$/;

export class SessionStore {
  private readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Opens (creating) `<stateDir>/sessions`, root-only. */
  static async open(stateDir: string): Promise<SessionStore> {
    const dir = join(stateDir, 'sessions');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(stateDir, 0o700);
    return new SessionStore(dir);
  }

  /** Writes the record durably; rejects (ENOSPC, EIO, ...) if it could not. */
  async save(record: SessionRecord): Promise<void> {
    const path = join(this.dir, `${record.id}.json`);
    const tmp = `${path}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      try {
        await fh.writeFile(JSON.stringify(record) + '\n');
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } catch (err) {
      // A half-written temporary file would hold the very space that ran out.
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await this.syncDir();
  }

  async remove(id: string): Promise<void> {
    try {
      await unlink(join(this.dir, `${id}.json`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  private async syncDir(): Promise<void> {
    const d = await open(this.dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }

  /** Every readable record; unreadable ones are returned as `bad` ids so the caller can log and drop them. */
  async loadAll(): Promise<{ records: SessionRecord[]; bad: string[] }> {
    const records: SessionRecord[] = [];
    const bad: string[] = [];
    for (const name of await readdir(this.dir)) {
      if (name.endsWith('.json.tmp')) {
        await unlink(join(this.dir, name)).catch(() => undefined);
        continue;
      }
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -5);
      try {
        const r = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as SessionRecord;
        if (r.id !== id || !ID.test(id) || !Number.isInteger(r.pid) || !Number.isInteger(r.uid)) throw new Error('bad');
        records.push(r);
      } catch {
        bad.push(id);
      }
    }
    return { records, bad };
  }
}
