/**
 * What the cache keeps: a manifest or blob is in use while some ref reaches it, ref → manifest (or index) →
 * model record → config and file blobs. rm and prune delete only what this does not reach.
 */
import { modelManifestDigest, parseManifest } from "../model/index.js";
import type { ModelRecord, Store } from "../store/index.js";

/** Everything the cache's tag records reach. */
export interface References {
  /** Model manifest digests. */
  models: Set<string>;
  /** Manifests and indexes. */
  manifests: Set<string>;
  /** Config and file blobs. */
  blobs: Set<string>;
}

export async function collectReferences(store: Store): Promise<References> {
  const refs: References = { models: new Set(), manifests: new Set(), blobs: new Set() };
  for (const entry of await store.refs.list()) {
    refs.manifests.add(entry.record.digest);
    refs.manifests.add(entry.record.manifestDigest);
    refs.models.add(entry.record.manifestDigest);
  }
  for (const manifestDigest of refs.models) {
    const record = await readModelSafely(store, manifestDigest);
    if (!record) continue;
    refs.blobs.add(record.configDigest);
    for (const file of record.files) refs.blobs.add(file.digest);
  }
  return refs;
}

/**
 * The model manifest digest a cached manifest or index stands for (an index's chosen child, as a pull picks it),
 * or undefined when the cache does not hold that manifest or it does not parse.
 */
export async function cachedModelDigest(store: Store, digest: string): Promise<string | undefined> {
  const body = await store.manifests.read(digest);
  if (!body) return undefined;
  try {
    return modelManifestDigest({ digest, parsed: parseManifest(body, undefined) });
  } catch {
    return undefined;
  }
}

export async function readModelSafely(store: Store, manifestDigest: string): Promise<ModelRecord | undefined> {
  try {
    return await store.models.read(manifestDigest);
  } catch {
    return undefined;
  }
}

