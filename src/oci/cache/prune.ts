/**
 * pruneCache(): `llama-oci prune`. Deletes what no tag reaches (model folders and records, manifests, blobs),
 * partial downloads untouched for a week (they would resume otherwise) and locks left by processes that died.
 * A dry run measures and lists exactly what a real run would delete.
 */
import { isAbandoned, type BlobFileEntry, type Store } from "../store/index.js";
import { FreedSpace } from "./freed-space.js";
import { openStore, type CacheOptions } from "./list.js";
import { collectReferences } from "./reachable.js";

export const DEFAULT_PARTIAL_MAX_AGE_MS = 7 * 24 * 60 * 60 * 1000;

export interface PruneOptions extends CacheOptions {
  /** List what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Partial downloads untouched (mtime) for at least this long are deleted; default 7 days. */
  olderThanMs?: number;
}

export type PrunedKind = "model" | "manifest" | "blob" | "lock" | "partial";

export interface PrunedItem {
  kind: PrunedKind;
  digest: string;
  /** Disk space deleting it gives back: 0 for a model folder of hard links, whose bytes count with the blobs. */
  size: number;
}

export interface PruneResult {
  dryRun: boolean;
  /** In deletion order: models, manifests, blobs, stale locks, partial downloads. */
  items: PrunedItem[];
  freedBytes: number;
  /** Unused blobs newer than olderThanMs left in place because a pull is running and may be about to use them. */
  kept: string[];
}

interface Planned extends PrunedItem {
  paths: string[];
}

export async function pruneCache(options: PruneOptions = {}): Promise<PruneResult> {
  const store = openStore(options);
  const dryRun = options.dryRun ?? false;
  const { planned, kept } = await plan(store, options.olderThanMs ?? DEFAULT_PARTIAL_MAX_AGE_MS);
  const freed = new FreedSpace();
  for (const item of planned) item.size = await freed.measure(item.paths);
  const items = dryRun ? planned : await execute(store, planned);
  return {
    dryRun,
    items: items.map(({ kind, digest, size }) => ({ kind, digest, size })),
    freedBytes: items.reduce((sum, item) => sum + item.size, 0),
    kept,
  };
}

async function plan(store: Store, maxAgeMs: number): Promise<{ planned: Planned[]; kept: string[] }> {
  const now = Date.now();
  const inUse = await collectReferences(store);
  const planned: Planned[] = [];
  const add = (kind: PrunedKind, digest: string, paths: string[]) => planned.push({ kind, digest, size: 0, paths });

  for (const model of sortByDigest(await store.models.list())) {
    if (inUse.models.has(model.manifestDigest)) continue;
    add("model", model.manifestDigest, [store.models.dir(model.manifestDigest), store.models.recordPath(model.manifestDigest)]);
  }
  for (const digest of (await store.manifests.list()).sort()) {
    if (!inUse.manifests.has(digest)) add("manifest", digest, [store.manifests.path(digest)]);
  }

  const files = sortByDigest(await store.blobs.list());
  const locks = files.filter((f) => f.kind === "lock");
  const live = new Set<string>();
  for (const lock of locks) if (await lockIsLive(lock)) live.add(lock.digest);
  const kept: string[] = [];
  for (const blob of files.filter((f) => f.kind === "blob")) {
    if (inUse.blobs.has(blob.digest)) continue;
    // A running pull may have fetched this blob moments ago for a model it has not recorded yet.
    if (live.size > 0 && now - blob.mtimeMs < maxAgeMs) kept.push(blob.digest);
    else add("blob", blob.digest, [blob.path]);
  }
  for (const lock of locks) if (!live.has(lock.digest)) add("lock", lock.digest, [lock.path]);
  const partials = new Map<string, BlobFileEntry[]>();
  for (const file of files) {
    if (file.kind !== "partial" && file.kind !== "partial-digest") continue;
    partials.set(file.digest, [...(partials.get(file.digest) ?? []), file]);
  }
  for (const [digest, parts] of partials) {
    if (live.has(digest)) continue;
    const touched = Math.max(...parts.map((p) => p.mtimeMs));
    if (now - touched >= maxAgeMs) add("partial", digest, parts.map((p) => p.path));
  }
  return { planned, kept };
}

/** Deletes the planned items that are still unused, each blob under its lock; returns those deleted. */
async function execute(store: Store, planned: Planned[]): Promise<Planned[]> {
  const inUse = await collectReferences(store);
  const done: Planned[] = [];
  for (const item of planned) {
    switch (item.kind) {
      case "model":
        if (inUse.models.has(item.digest)) continue;
        await store.models.remove(item.digest);
        break;
      case "manifest":
        if (inUse.manifests.has(item.digest)) continue;
        await store.manifests.remove(item.digest);
        break;
      case "blob":
        if (inUse.blobs.has(item.digest)) continue;
        if (!(await store.underBlobLock(item.digest, () => store.blobs.remove(item.digest)))) continue;
        break;
      case "lock":
        // Taking an abandoned lock over and releasing it removes the file; a live owner makes this a no-op.
        if (!(await store.underBlobLock(item.digest, async () => {}))) continue;
        break;
      case "partial":
        if (!(await store.underBlobLock(item.digest, () => store.blobs.discardPartial(item.digest)))) continue;
        break;
    }
    done.push(item);
  }
  return done;
}

async function lockIsLive(lock: BlobFileEntry): Promise<boolean> {
  return !(await isAbandoned(lock.path));
}

function sortByDigest<T extends { digest?: string; manifestDigest?: string }>(items: T[]): T[] {
  const key = (item: T) => item.digest ?? item.manifestDigest ?? "";
  return items.sort((a, b) => key(a).localeCompare(key(b)));
}
