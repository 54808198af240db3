/**
 * Real filesystems in trouble, for the fault suites (they run as root): a small tmpfs that can be filled to the last
 * byte, and a loop-mounted ext4 with `errors=remount-ro` on which the kernel itself raises a filesystem error (ext4's
 * sysfs `trigger_fs_error`), so it turns read-only exactly as a failing disk would make it.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

export interface TmpfsMount {
  dir: string;
  /** Writes a filler file until the filesystem is full (ENOSPC). */
  fill(): void;
  /** Deletes the filler: room again. */
  free(): void;
  unmount(): void;
}

export function mountTmpfs(sizeBytes: number): TmpfsMount {
  const dir = mkdtempSync(join(tmpdir(), 'vd-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'tmpfs', dir]);
  const filler = join(dir, 'filler');
  return {
    dir,
    fill() {
      const fd = openSync(filler, 'a');
      const chunk = Buffer.alloc(64 * 1024, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        closeSync(fd);
      }
      // Fill the last partial block too.
      const fd2 = openSync(filler, 'a');
      try {
        for (;;) writeSync(fd2, Buffer.alloc(512, 1));
      } catch {
        // full
      } finally {
        closeSync(fd2);
      }
    },
    free() {
      rmSync(filler, { force: true });
    },
    unmount() {
      execFileSync('umount', ['-l', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Ext4Mount {
  dir: string;
  image: string;
  /** Makes the kernel raise an ext4 error on this filesystem: with errors=remount-ro it turns read-only at once. */
  triggerError(): void;
  /** Unmounts, repairs with e2fsck (as a reboot would) and mounts again read-write; returns the same dir. */
  remount(): void;
  unmount(): void;
}

function sysfsName(image: string): string {
  // `losetup -j IMAGE` prints "/dev/loopN: ...": the ext4 sysfs directory is named after the device.
  const line = execFileSync('losetup', ['-j', image], { encoding: 'utf8' }).split('\n').find(Boolean);
  if (!line) throw new Error(`no loop device for ${image}`);
  return basename(line.slice(0, line.indexOf(':')));
}

export function mountLoopExt4(sizeMiB: number): Ext4Mount {
  const base = mkdtempSync(join(tmpdir(), 'vd-ext4-'));
  const image = join(base, 'fs.img');
  const dir = join(base, 'mnt');
  execFileSync('truncate', ['-s', `${sizeMiB}M`, image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  execFileSync('mkdir', ['-p', dir]);
  const mount = () => execFileSync('mount', ['-o', 'loop,errors=remount-ro', image, dir]);
  mount();
  let mounted = true;
  return {
    dir,
    image,
    triggerError() {
      execFileSync('sh', ['-c', `echo 1 > /sys/fs/ext4/${sysfsName(image)}/trigger_fs_error`]);
    },
    remount() {
      execFileSync('umount', [dir]);
      try {
        execFileSync('e2fsck', ['-f', '-y', image], { stdio: 'pipe' });
      } catch {
        // e2fsck exits 1 when it fixed something: expected after an error.
      }
      mount();
    },
    unmount() {
      if (mounted) execFileSync('umount', ['-l', dir]);
      mounted = false;
      rmSync(base, { recursive: true, force: true });
    },
  };
}
