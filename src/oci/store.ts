/**
 * The on-disk cache, under <cacheDir>/oci/:
 *   blobs/sha256/<hex>            verified blobs (layers and configs), each stored once whatever uses it
 *   blobs/sha256/<hex>.tmp        a partial download, next to <hex>.digest holding the digest it must reach
 *   blobs/sha256/<hex>.lock       held while one process downloads that blob
 *   manifests/sha256/<hex>        raw manifest and index bytes, as the registry sent them
 *   models/<hex>.json             what a model manifest resolved to: its files, digests, sizes, when verified
 *   models/<hex>/<filename>       the model's files as llama.cpp expects them, hard links to the blobs
 *   refs/<registry>/<repository>/@tags/<tag>.json   which manifest a tag resolved to, for offline pulls
 * Every file is written to a temporary name and renamed into place, so a reader never sees half a file.
 */
import { randomBytes } from "node:crypto";
import { copyFile, link, mkdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { LlamaOciError } from "../errors.js";
import { digestHex, parseDigest } from "./digest.js";
import { acquireLock, type Lock, type LockOptions } from "./lock.js";

export interface StoredFile {
  kind: string;
  mediaType: string;
  digest: string;
  size: number;
  /** Relative path inside the model folder. */
  filename: string;
}

export interface ModelRecord {
  manifestDigest: string;
  format: string;
  configDigest: string;
  files: StoredFile[];
  verifiedAt: string;
}

export interface TagRecord {
  reference: string;
  /** What the tag pointed to: a manifest or an index. */
  digest: string;
  mediaType: string;
  /** The model manifest (the index's chosen child, or digest itself). */
  manifestDigest: string;
  resolvedAt: string;
}

export class Store {
  readonly root: string;

  constructor(cacheDir: string) {
    this.root = join(cacheDir, "oci");
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, "blobs", algorithm, hex);
  }
  partialPath(digest: string): string {
    return `${this.blobPath(digest)}.tmp`;
  }
  partialDigestPath(digest: string): string {
    return `${this.blobPath(digest)}.digest`;
  }
  manifestPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, "manifests", algorithm, hex);
  }
  modelDir(manifestDigest: string): string {
    return join(this.root, "models", digestHex(manifestDigest));
  }
  private modelRecordPath(manifestDigest: string): string {
    return `${this.modelDir(manifestDigest)}.json`;
  }
  private tagPath(registry: string, repository: string, tag: string): string {
    return join(this.root, "refs", encodeURIComponent(registry), ...repository.split("/"), "@tags", `${tag}.json`);
  }

  /** Whether a verified blob of this digest and size is present. */
  async hasBlob(digest: string, size: number): Promise<boolean> {
    try {
      const info = await stat(this.blobPath(digest));
      return info.isFile() && info.size === size;
    } catch {
      return false;
    }
  }

  async lockBlob(digest: string, options?: LockOptions): Promise<Lock> {
    const path = `${this.blobPath(digest)}.lock`;
    await mkdir(dirname(path), { recursive: true });
    return acquireLock(path, options);
  }

  /** Moves a fully verified partial into place and forgets its .digest file. */
  async commitBlob(digest: string): Promise<void> {
    await rename(this.partialPath(digest), this.blobPath(digest));
    await rm(this.partialDigestPath(digest), { force: true });
  }

  async discardPartial(digest: string): Promise<void> {
    await rm(this.partialPath(digest), { force: true });
    await rm(this.partialDigestPath(digest), { force: true });
  }

  async removeBlob(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  async writeManifest(digest: string, body: Buffer): Promise<void> {
    await atomicWrite(this.manifestPath(digest), body);
  }

  async readManifest(digest: string): Promise<Buffer | undefined> {
    return readFile(this.manifestPath(digest)).catch(() => undefined);
  }

  async readModel(manifestDigest: string): Promise<ModelRecord | undefined> {
    return readJson<ModelRecord>(this.modelRecordPath(manifestDigest));
  }

  async writeModel(record: ModelRecord): Promise<void> {
    await atomicWrite(this.modelRecordPath(record.manifestDigest), JSON.stringify(record, null, 2) + "\n");
  }

  async readTag(registry: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    return readJson<TagRecord>(this.tagPath(registry, repository, tag));
  }

  async writeTag(registry: string, repository: string, tag: string, record: TagRecord): Promise<void> {
    await atomicWrite(this.tagPath(registry, repository, tag), JSON.stringify(record, null, 2) + "\n");
  }

  /**
   * Lays the model's files out under models/<hex>/ with the names llama.cpp expects (shards side by side),
   * as hard links to the blobs (no second copy), or symbolic links, or copies where links are impossible.
   */
  async linkModel(manifestDigest: string, files: StoredFile[]): Promise<string> {
    const dir = this.modelDir(manifestDigest);
    for (const file of files) {
      const target = join(dir, ...file.filename.split("/"));
      if (relative(dir, target).startsWith("..")) {
        throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `file path ${JSON.stringify(file.filename)} escapes the model folder`);
      }
      await mkdir(dirname(target), { recursive: true });
      await placeLink(this.blobPath(file.digest), target);
    }
    return dir;
  }
}

async function placeLink(source: string, target: string): Promise<void> {
  const [from, to] = await Promise.all([stat(source), stat(target).catch(() => undefined)]);
  if (to && to.ino === from.ino && to.dev === from.dev) return;
  const temp = `${target}.${randomBytes(4).toString("hex")}.link`;
  try {
    await link(source, temp);
  } catch {
    try {
      await symlink(source, temp);
    } catch {
      await copyFile(source, temp);
    }
  }
  await rename(temp, target);
  // rename(2) does nothing when temp and target are already links to the same file (another process placed
  // target meanwhile), leaving temp behind.
  await rm(temp, { force: true });
}

export async function atomicWrite(path: string, data: string | Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.new`;
  try {
    await writeFile(temp, data, { flush: true });
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw new LlamaOciError("CACHE", `cannot write ${path}: ${(error as Error).message}`, {
      hint: "check free disk space and permissions of the cache directory (--cache-dir / LLAMA_CACHE)",
      cause: error,
    });
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}
