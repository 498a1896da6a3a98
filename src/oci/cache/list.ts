/** listModels(): `llama-oci ls`: every tag (and pull by digest) in the cache, which model it names, its size. */
import { join } from "node:path";
import { defaultCacheDir, Store, type ModelRecord } from "../store/index.js";
import { entryReference, modelId } from "./names.js";
import { readModelSafely } from "./reachable.js";
import { familiarReference } from "../name/index.js";

export interface CacheOptions {
  /** Cache root; default LLAMA_CACHE, else $XDG_CACHE_HOME/llama.cpp, else ~/.cache/llama.cpp. */
  cacheDir?: string;
  /** Environment to read LLAMA_CACHE and the like from; default process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface ModelListing {
  /** The name as a user types it, e.g. "ai/smollm2:135M-Q4_0" or "127.0.0.1:5000/team/m:v1". */
  reference: string;
  /** The first 12 hex digits of the model manifest digest, as `docker images` shows an image ID. */
  id: string;
  /** The model manifest digest. */
  digest: string;
  /** Bytes of all the model's files: every shard, projector, chat template and license. */
  size: number;
  /** When the reference was last resolved by a pull (ISO 8601). */
  pulledAt: string;
  /** The GGUF file to load (first shard), absent when the model's record is missing from the cache. */
  path?: string;
}

/** Every tag (and pull by digest) in the cache, newest first. */
export async function listModels(options: CacheOptions = {}): Promise<ModelListing[]> {
  const store = openStore(options);
  const rows: ModelListing[] = [];
  const records = new Map<string, ModelRecord | undefined>();
  for (const entry of await store.refs.list()) {
    const ref = entryReference(entry);
    if (!ref) continue;
    const manifestDigest = entry.record.manifestDigest;
    if (!records.has(manifestDigest)) records.set(manifestDigest, await readModelSafely(store, manifestDigest));
    const record = records.get(manifestDigest);
    const gguf = record?.files.find((f) => f.kind === "gguf");
    rows.push({
      reference: familiarReference(ref),
      id: modelId(manifestDigest),
      digest: manifestDigest,
      size: record ? record.files.reduce((sum, f) => sum + f.size, 0) : 0,
      pulledAt: entry.record.resolvedAt,
      path: gguf ? join(store.models.dir(manifestDigest), ...gguf.filename.split("/")) : undefined,
    });
  }
  return rows.sort((a, b) => b.pulledAt.localeCompare(a.pulledAt) || a.reference.localeCompare(b.reference));
}

export function openStore(options: CacheOptions): Store {
  return new Store(options.cacheDir ?? defaultCacheDir(options.env ?? process.env));
}

