/**
 * How much disk deleting files gives back. Model folders hold hard links to blobs, so deleting a path frees its
 * bytes only when it was the file's last link: measure() counts links down per inode, in deletion order, and so
 * gives the same answer for a dry run as for the real thing.
 */
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

export class FreedSpace {
  private readonly linksLeft = new Map<string, number>();

  /** Bytes freed by deleting these files or folders, after everything measured before. */
  async measure(paths: readonly string[]): Promise<number> {
    let bytes = 0;
    for (const path of paths) {
      for (const file of await filesUnder(path)) {
        const key = `${file.dev}:${file.ino}`;
        const left = (this.linksLeft.get(key) ?? file.nlink) - 1;
        this.linksLeft.set(key, left);
        if (left === 0) bytes += file.size;
      }
    }
    return bytes;
  }
}

interface FileInfo {
  dev: number;
  ino: number;
  nlink: number;
  size: number;
}

async function filesUnder(path: string): Promise<FileInfo[]> {
  const info = await lstat(path).catch(() => undefined);
  if (!info) return [];
  if (!info.isDirectory()) return [info];
  const entries = await readdir(path).catch(() => [] as string[]);
  const nested = await Promise.all(entries.map((name) => filesUnder(join(path, name))));
  return nested.flat();
}
