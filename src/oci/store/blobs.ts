/**
 * Content-addressed blobs: a verified blob under its digest, the partial download that becomes it (with the
 * digest it must reach beside it), and listing everything under blobs/ for prune.
 */
import { access, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { isDigest } from "../name/index.js";
import { listDir } from "./atomic-write.js";
import { fsyncDir, fsyncFile } from "./durable.js";
import { ALGORITHMS, type StoreLayout } from "./layout.js";

/**
 * A file under blobs/: a verified blob, a partial download (.tmp, and the per-part state of one written over several
 * connections, .parts), the digest it must reach (.digest), or a lock.
 */
export interface BlobFileEntry {
  digest: string;
  kind: "blob" | "partial" | "partial-digest" | "lock";
  path: string;
  size: number;
  mtimeMs: number;
}

const SUFFIXES: ReadonlyMap<string, BlobFileEntry["kind"]> = new Map([
  [".tmp", "partial"],
  [".parts", "partial"],
  [".digest", "partial-digest"],
  [".lock", "lock"],
]);

export class BlobStore {
  constructor(private readonly layout: StoreLayout) {}

  path(digest: string): string {
    return this.layout.blob(digest);
  }
  partialPath(digest: string): string {
    return this.layout.partial(digest);
  }
  partialDigestPath(digest: string): string {
    return this.layout.partialDigest(digest);
  }
  partialStatePath(digest: string): string {
    return this.layout.partialState(digest);
  }

  /** Whether a verified blob of this digest and size is present. */
  async has(digest: string, size: number): Promise<boolean> {
    try {
      const info = await stat(this.path(digest));
      return info.isFile() && info.size === size;
    } catch {
      return false;
    }
  }

  /**
   * Moves a fully verified partial into place and forgets its .parts and .digest files: its data is fsynced first and
   * the folder after, so that after a power cut the blob is either absent or whole (a cache hit trusts a blob by its
   * size).
   */
  async commit(digest: string): Promise<void> {
    const partial = this.partialPath(digest);
    await fsyncFile(partial);
    await rename(partial, this.path(digest));
    await fsyncDir(dirname(this.path(digest)));
    await rm(this.partialStatePath(digest), { force: true });
    await rm(this.partialDigestPath(digest), { force: true });
  }

  /**
   * Whether anything of a download is left beside the blob: a partial, its .parts or .digest, or a lock (a process
   * killed after the blob was renamed into place but before it cleaned up leaves these).
   */
  async hasLeftovers(digest: string): Promise<boolean> {
    const paths = [this.partialPath(digest), this.partialStatePath(digest), this.partialDigestPath(digest), this.layout.lock(digest)];
    const found = await Promise.all(paths.map((path) => access(path).then(() => true, () => false)));
    return found.includes(true);
  }

  async discardPartial(digest: string): Promise<void> {
    // The .digest first: without it nothing left behind by a crash here is resumed (a .tmp whose .parts was already
    // gone would otherwise read as a single-stream prefix, holes and all).
    await rm(this.partialDigestPath(digest), { force: true });
    await rm(this.partialPath(digest), { force: true });
    await rm(this.partialStatePath(digest), { force: true });
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /** Every file under blobs/ that belongs to a digest: verified blobs, partial downloads and locks. */
  async list(): Promise<BlobFileEntry[]> {
    const files: BlobFileEntry[] = [];
    for (const algorithm of ALGORITHMS) {
      const dir = this.layout.blobsDir(algorithm);
      for (const entry of await listDir(dir)) {
        if (!entry.isFile()) continue;
        const dot = entry.name.indexOf(".");
        const hex = dot === -1 ? entry.name : entry.name.slice(0, dot);
        const kind = dot === -1 ? "blob" : SUFFIXES.get(entry.name.slice(dot));
        const digest = `${algorithm}:${hex}`;
        if (!kind || !isDigest(digest)) continue;
        const path = join(dir, entry.name);
        const info = await stat(path).catch(() => undefined);
        if (info) files.push({ digest, kind, path, size: info.size, mtimeMs: info.mtimeMs });
      }
    }
    return files;
  }
}
