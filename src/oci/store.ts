/**
 * The on-disk cache, under <cacheDir>/oci/:
 *   blobs/sha256/<hex>            verified blobs (layers and configs), each stored once whatever uses it
 *   blobs/sha256/<hex>.tmp        a partial download, next to <hex>.digest holding the digest it must reach
 *   blobs/sha256/<hex>.lock       held while one process downloads that blob
 *   manifests/sha256/<hex>        raw manifest and index bytes, as the registry sent them
 *   models/<hex>.json             what a model manifest resolved to: its files, digests, sizes, when verified
 *   models/<hex>/<filename>       the model's files as llama.cpp expects them, hard links to the blobs
 *   refs/<registry>/<repository>/@tags/<tag>.json   which manifest a tag resolved to, for offline pulls
 *   refs/<registry>/<repository>/@digests/<algorithm>/<hex>.json   the same for a pull by digest
 * What a tag record names (and what its model record lists) is in use; everything else may be pruned.
 * Every file is written to a temporary name and renamed into place, so a reader never sees half a file.
 */
import { randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { LlamaOciError } from "../errors.js";
import { digestHex, parseDigest, type DigestAlgorithm } from "./digest.js";
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

/** A tag record or a pull-by-digest record, with where it sits. */
export interface RefEntry {
  registry: string;
  repository: string;
  /** Set for a tag record. */
  tag?: string;
  /** Set for a pull-by-digest record. */
  digest?: string;
  record: TagRecord;
}

/** What models/ holds for one manifest digest: its record, its folder, or (after a crash) only one of them. */
export interface ModelEntry {
  manifestDigest: string;
  record?: ModelRecord;
  hasDir: boolean;
}

/** A file under blobs/: a verified blob, a partial download (.tmp), the digest it must reach (.digest), or a lock. */
export interface BlobFileEntry {
  digest: string;
  kind: "blob" | "partial" | "partial-digest" | "lock";
  path: string;
  size: number;
  mtimeMs: number;
}

const ALGORITHMS: readonly DigestAlgorithm[] = ["sha256", "sha512"];
const BLOB_SUFFIXES: ReadonlyMap<string, BlobFileEntry["kind"]> = new Map([
  [".tmp", "partial"],
  [".digest", "partial-digest"],
  [".lock", "lock"],
]);

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
  lockPath(digest: string): string {
    return `${this.blobPath(digest)}.lock`;
  }
  private modelRecordPath(manifestDigest: string): string {
    return `${this.modelDir(manifestDigest)}.json`;
  }
  private tagPath(registry: string, repository: string, tag: string): string {
    return join(this.repositoryRefsDir(registry, repository), "@tags", `${tag}.json`);
  }
  private digestRefPath(registry: string, repository: string, digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.repositoryRefsDir(registry, repository), "@digests", algorithm, `${hex}.json`);
  }
  private repositoryRefsDir(registry: string, repository: string): string {
    return join(this.root, "refs", encodeURIComponent(registry), ...repository.split("/"));
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
    const path = this.lockPath(digest);
    await mkdir(dirname(path), { recursive: true });
    return acquireLock(path, options);
  }

  /** The blob's lock if nobody live holds it (an abandoned lock is taken over), else undefined; never waits. */
  async tryLockBlob(digest: string): Promise<Lock | undefined> {
    const busy = new AbortController();
    try {
      return await this.lockBlob(digest, { signal: busy.signal, onWait: () => busy.abort() });
    } catch (error) {
      if (busy.signal.aborted) return undefined;
      throw error;
    }
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

  /** Every file under blobs/ that belongs to a digest: verified blobs, partial downloads and locks. */
  async listBlobFiles(): Promise<BlobFileEntry[]> {
    const files: BlobFileEntry[] = [];
    for (const algorithm of ALGORITHMS) {
      const dir = join(this.root, "blobs", algorithm);
      for (const entry of await listDir(dir)) {
        if (!entry.isFile()) continue;
        const dot = entry.name.indexOf(".");
        const hex = dot === -1 ? entry.name : entry.name.slice(0, dot);
        const kind = dot === -1 ? "blob" : BLOB_SUFFIXES.get(entry.name.slice(dot));
        const digest = `${algorithm}:${hex}`;
        if (!kind || !isDigest(digest)) continue;
        const path = join(dir, entry.name);
        const info = await stat(path).catch(() => undefined);
        if (info) files.push({ digest, kind, path, size: info.size, mtimeMs: info.mtimeMs });
      }
    }
    return files;
  }

  async writeManifest(digest: string, body: Buffer): Promise<void> {
    await atomicWrite(this.manifestPath(digest), body);
  }

  async readManifest(digest: string): Promise<Buffer | undefined> {
    return readFile(this.manifestPath(digest)).catch(() => undefined);
  }

  async removeManifest(digest: string): Promise<void> {
    await rm(this.manifestPath(digest), { force: true });
  }

  /** Digests of every stored manifest and index. */
  async listManifests(): Promise<string[]> {
    const digests: string[] = [];
    for (const algorithm of ALGORITHMS) {
      for (const file of await listDir(join(this.root, "manifests", algorithm))) {
        const digest = `${algorithm}:${file.name}`;
        if (file.isFile() && isDigest(digest)) digests.push(digest);
      }
    }
    return digests;
  }

  /** Every model record and model folder under models/, paired by manifest digest. */
  async listModels(): Promise<ModelEntry[]> {
    const byHex = new Map<string, ModelEntry>();
    const entryFor = (hex: string): ModelEntry | undefined => {
      const known = byHex.get(hex);
      if (known) return known;
      const manifestDigest = digestForHex(hex);
      if (!manifestDigest) return undefined;
      const created: ModelEntry = { manifestDigest, hasDir: false };
      byHex.set(hex, created);
      return created;
    };
    for (const entry of await listDir(join(this.root, "models"))) {
      if (entry.isDirectory()) {
        const model = entryFor(entry.name);
        if (model) model.hasDir = true;
      } else if (entry.isFile() && entry.name.endsWith(".json")) {
        const model = entryFor(entry.name.slice(0, -".json".length));
        if (model) model.record = await this.readModel(model.manifestDigest);
      }
    }
    return [...byHex.values()];
  }

  /** Deletes a model's record and its folder of links (the blobs stay). */
  async removeModel(manifestDigest: string): Promise<void> {
    await rm(this.modelRecordPath(manifestDigest), { force: true });
    await rm(this.modelDir(manifestDigest), { recursive: true, force: true });
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

  async removeTag(registry: string, repository: string, tag: string): Promise<void> {
    await rm(this.tagPath(registry, repository, tag), { force: true });
  }

  /** Records that a model was pulled by digest, so that it counts as in use like a tagged one. */
  async writeDigestRef(registry: string, repository: string, digest: string, record: TagRecord): Promise<void> {
    await atomicWrite(this.digestRefPath(registry, repository, digest), JSON.stringify(record, null, 2) + "\n");
  }

  async removeDigestRef(registry: string, repository: string, digest: string): Promise<void> {
    await rm(this.digestRefPath(registry, repository, digest), { force: true });
  }

  /** Every tag and pull-by-digest record in the cache. Unreadable records are skipped. */
  async listRefs(): Promise<RefEntry[]> {
    const refsDir = join(this.root, "refs");
    const entries: RefEntry[] = [];
    for (const registryDir of await listDir(refsDir)) {
      if (!registryDir.isDirectory()) continue;
      const registry = safeDecode(registryDir.name);
      if (registry === undefined) continue;
      await this.collectRefs(join(refsDir, registryDir.name), registry, [], entries);
    }
    return entries;
  }

  private async collectRefs(dir: string, registry: string, path: string[], out: RefEntry[]): Promise<void> {
    for (const entry of await listDir(dir)) {
      if (!entry.isDirectory()) continue;
      const full = join(dir, entry.name);
      const repository = path.join("/");
      if (entry.name === "@tags" && path.length > 0) {
        for (const file of await listDir(full)) {
          if (!file.isFile() || !file.name.endsWith(".json")) continue;
          const record = await readJson<TagRecord>(join(full, file.name));
          if (record) out.push({ registry, repository, tag: file.name.slice(0, -".json".length), record });
        }
      } else if (entry.name === "@digests" && path.length > 0) {
        for (const algorithm of ALGORITHMS) {
          for (const file of await listDir(join(full, algorithm))) {
            if (!file.isFile() || !file.name.endsWith(".json")) continue;
            const record = await readJson<TagRecord>(join(full, algorithm, file.name));
            if (record) out.push({ registry, repository, digest: `${algorithm}:${file.name.slice(0, -".json".length)}`, record });
          }
        }
      } else if (!entry.name.startsWith("@")) {
        await this.collectRefs(full, registry, [...path, entry.name], out);
      }
    }
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

async function listDir(dir: string): Promise<Dirent[]> {
  return readdir(dir, { withFileTypes: true }).catch(() => []);
}

function safeDecode(name: string): string | undefined {
  try {
    return decodeURIComponent(name);
  } catch {
    return undefined;
  }
}

function isDigest(digest: string): boolean {
  try {
    parseDigest(digest);
    return true;
  } catch {
    return false;
  }
}

/** models/ names folders by hex alone; the length tells the algorithm. */
function digestForHex(hex: string): string | undefined {
  const digest = `${hex.length === 128 ? "sha512" : "sha256"}:${hex}`;
  return isDigest(digest) ? digest : undefined;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}
