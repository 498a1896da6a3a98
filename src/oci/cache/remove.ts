/**
 * removeModels(): `llama-oci rm`. Removes names from the cache; a model, its manifests and its blobs go only when
 * no remaining tag reaches them, so a blob shared by two models stays while either is tagged.
 *
 * What a name removes:
 *   repository:tag          that tag
 *   repository@digest       every name of that repository pointing at that content (tags and the pull-by-digest
 *                           record), like `docker rmi repo@sha256:...`
 *   model ID (12+ hex)      every name of that model; refused when there are several unless force is set, as
 *                           `docker rmi <id>` refuses without -f
 */
import { lstat } from "node:fs/promises";
import { LlamaOciError } from "../../errors.js";
import type { RefEntry, Store } from "../store/index.js";
import { FreedSpace } from "./freed-space.js";
import { openStore, type CacheOptions } from "./list.js";
import { entryName, modelId, resolveLocal } from "./names.js";
import { collectReferences } from "./reachable.js";

export interface RemoveOptions extends CacheOptions {
  /** Remove a model given by ID even when several names point at it (all of them go). */
  force?: boolean;
}

export interface RemoveOutcome {
  /** The reference as given. */
  reference: string;
  /** Names removed, in the familiar form. */
  untagged: string[];
  /** Digests deleted because nothing else used them: the model (its manifest digest) first, then its blobs. */
  deleted: string[];
  /** Disk space given back. */
  freedBytes: number;
  /** Set when nothing was removed for this reference (not cached, invalid, ambiguous); the others still run. */
  error?: LlamaOciError;
}

/** Removes each reference in turn; a failing one is reported in its outcome and does not stop the rest. */
export async function removeModels(references: readonly string[], options: RemoveOptions = {}): Promise<RemoveOutcome[]> {
  const store = openStore(options);
  const outcomes: RemoveOutcome[] = [];
  for (const reference of references) {
    const outcome: RemoveOutcome = { reference, untagged: [], deleted: [], freedBytes: 0 };
    try {
      await removeOne(store, reference, options, outcome);
    } catch (error) {
      outcome.error =
        error instanceof LlamaOciError
          ? error
          : new LlamaOciError("CACHE", `cannot remove ${reference}: ${(error as Error).message}`, { cause: error });
    }
    outcomes.push(outcome);
  }
  return outcomes;
}

async function removeOne(store: Store, input: string, options: RemoveOptions, outcome: RemoveOutcome): Promise<void> {
  const target = await resolveLocal(store, input);
  let entries: RefEntry[];
  if (target.kind === "tag") {
    entries = [target.entry];
  } else {
    entries = target.entries;
    if (target.kind === "id" && entries.length > 1 && !options.force) {
      throw new LlamaOciError(
        "INVALID_ARGUMENT",
        `model ${modelId(target.manifestDigest)} has ${entries.length} names (${entries.map(entryName).join(", ")})`,
        { hint: "remove the names one by one, or use --force to remove them all" },
      );
    }
    if (entries.length === 0 && (await collectReferences(store)).models.has(target.manifestDigest)) {
      const names = (await store.refs.list()).filter((e) => e.record.manifestDigest === target.manifestDigest).map(entryName);
      throw new LlamaOciError("NOT_FOUND", `${input} is not a name in the cache`, {
        hint: `the model is cached as ${names.join(", ")}; remove that name instead`,
      });
    }
  }

  for (const entry of entries) {
    if (entry.tag !== undefined) await store.refs.removeTag(entry.registry, entry.repository, entry.tag);
    else await store.refs.removeDigest(entry.registry, entry.repository, entry.digest!);
    outcome.untagged.push(entryName(entry));
  }
  const models = new Set([target.kind === "tag" ? target.entry.record.manifestDigest : target.manifestDigest]);
  const manifests = new Set(models);
  for (const entry of entries) manifests.add(entry.record.digest);
  await deleteUnused(store, models, manifests, outcome);
}

/** Deletes those of the given models and manifests, and of the models' blobs, that no name reaches any more. */
async function deleteUnused(store: Store, models: Set<string>, manifests: Set<string>, outcome: RemoveOutcome): Promise<void> {
  const inUse = await collectReferences(store);
  const freed = new FreedSpace();
  const blobs = new Set<string>();
  for (const manifestDigest of models) {
    if (inUse.models.has(manifestDigest)) continue;
    const record = await store.models.read(manifestDigest);
    if (record) {
      blobs.add(record.configDigest);
      for (const file of record.files) blobs.add(file.digest);
    }
    outcome.freedBytes += await freed.measure([store.models.dir(manifestDigest), store.models.recordPath(manifestDigest)]);
    await store.models.remove(manifestDigest);
    outcome.deleted.push(manifestDigest);
  }
  for (const digest of manifests) {
    if (inUse.manifests.has(digest)) continue;
    outcome.freedBytes += await freed.measure([store.manifests.path(digest)]);
    await store.manifests.remove(digest);
  }
  for (const digest of blobs) {
    if (inUse.blobs.has(digest)) continue;
    // A blob being written by a pull is locked: leave it, prune will find it later if it stays unused.
    const lock = await store.tryLockBlob(digest);
    if (!lock) continue;
    try {
      if (!(await exists(store.blobs.path(digest)))) continue;
      outcome.freedBytes += await freed.measure([store.blobs.path(digest)]);
      await store.blobs.remove(digest);
      outcome.deleted.push(digest);
    } finally {
      await lock.release();
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
}
