/**
 * Where else on a registry a blob is known to be: the cache's tag and pull-by-digest records say which repositories
 * of that registry models were pulled from, packaged for or pushed to, and their cached manifests list the blobs.
 * A push asks the registry to mount such a blob instead of uploading it again.
 */
import { parseManifest } from "../model/index.js";
import type { Store } from "../store/index.js";

/** Blob digest -> repositories of `registry` (other than `exclude`) whose cached models hold it. */
export async function mountSources(store: Store, registry: string, exclude: string): Promise<Map<string, string[]>> {
  const sources = new Map<string, string[]>();
  for (const entry of await store.refs.list()) {
    if (entry.registry !== registry || entry.repository === exclude) continue;
    const body = await store.manifests.read(entry.record.manifestDigest);
    if (!body) continue;
    let digests: string[];
    try {
      const parsed = parseManifest(body, undefined);
      if (parsed.kind !== "manifest") continue;
      digests = [parsed.manifest.config.digest, ...parsed.manifest.layers.map((layer) => layer.digest)];
    } catch {
      continue;
    }
    for (const digest of digests) {
      const repositories = sources.get(digest) ?? [];
      if (!repositories.includes(entry.repository)) repositories.push(entry.repository);
      sources.set(digest, repositories);
    }
  }
  return sources;
}
