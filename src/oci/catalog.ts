/**
 * What the cache holds, as a user names it: one entry per tag (and per pull by digest), which model each points
 * to, and which manifests and blobs are in use. A manifest or blob is in use while some tag record reaches it:
 * tag → manifest (or index) → model record → config and file blobs. rm, prune and tag are built on this.
 */
import { join } from "node:path";
import { LlamaOciError } from "../errors.js";
import { defaultCacheDir } from "./cache-dir.js";
import { parseManifest, selectManifestFromIndex } from "./manifest.js";
import { familiarReference, formatReference, parseReference, type Reference } from "./reference.js";
import { Store, type ModelRecord, type RefEntry } from "./store.js";

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
  for (const entry of await store.listRefs()) {
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
      path: gguf ? join(store.modelDir(manifestDigest), ...gguf.filename.split("/")) : undefined,
    });
  }
  return rows.sort((a, b) => b.pulledAt.localeCompare(a.pulledAt) || a.reference.localeCompare(b.reference));
}

export function openStore(options: CacheOptions): Store {
  return new Store(options.cacheDir ?? defaultCacheDir(options.env ?? process.env));
}

export function modelId(digest: string): string {
  return digest.slice(digest.indexOf(":") + 1, digest.indexOf(":") + 13);
}

/** The reference a record stands for, from where it sits in refs/ (undefined for a name that does not parse). */
export function entryReference(entry: RefEntry): Reference | undefined {
  const suffix = entry.tag !== undefined ? `:${entry.tag}` : `@${entry.digest}`;
  try {
    return parseReference(`${entry.registry}/${entry.repository}${suffix}`);
  } catch {
    return undefined;
  }
}

async function readModelSafely(store: Store, manifestDigest: string): Promise<ModelRecord | undefined> {
  try {
    return await store.readModel(manifestDigest);
  } catch {
    return undefined;
  }
}

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
  for (const entry of await store.listRefs()) {
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

/** What a name given to rm or tag stands for in the cache. */
export type LocalTarget =
  /** A tag: exactly one record. */
  | { kind: "tag"; ref: Reference; entry: RefEntry }
  /** repository@digest: every record of that repository pointing at this content. */
  | { kind: "digest"; ref: Reference; manifestDigest: string; entries: RefEntry[] }
  /** A model ID (12 to 64 hex digits, or sha256:<hex>): every record pointing at that model. */
  | { kind: "id"; manifestDigest: string; entries: RefEntry[] };

const ID_PATTERN = /^(?:sha256:)?([0-9a-f]{12,64})$/;

/**
 * Finds what `input` names in the cache. A name is tried as a reference first (parseReference: "smollm2" is
 * docker.io/ai/smollm2:latest); hex of 12 or more digits that is not a cached tag is a model ID, as in docker rmi.
 */
export async function resolveLocal(store: Store, input: string): Promise<LocalTarget> {
  const entries = await store.listRefs();
  const idMatch = ID_PATTERN.exec(input);
  let ref: Reference | undefined;
  try {
    ref = parseReference(input);
  } catch (error) {
    if (!idMatch) throw error;
  }
  if (ref?.tag !== undefined) {
    const entry = entries.find((e) => e.tag === ref.tag && e.registry === ref.registry && e.repository === ref.repository);
    if (entry) return { kind: "tag", ref, entry };
  } else if (ref?.digest !== undefined) {
    const digest = ref.digest;
    const inRepository = entries.filter(
      (e) => e.registry === ref.registry && e.repository === ref.repository && (e.record.digest === digest || e.record.manifestDigest === digest),
    );
    const manifestDigest = inRepository[0]?.record.manifestDigest ?? (await cachedModelOf(store, digest));
    if (manifestDigest !== undefined) return { kind: "digest", ref, manifestDigest, entries: inRepository };
  }
  if (idMatch) {
    const manifestDigest = await findModelById(store, entries, idMatch[1]!);
    if (manifestDigest) {
      return { kind: "id", manifestDigest, entries: entries.filter((e) => e.record.manifestDigest === manifestDigest) };
    }
  }
  throw new LlamaOciError("NOT_FOUND", `${describeInput(input)} is not in the cache (${store.root})`, {
    hint: "run 'llama-oci ls' to see the cached models",
  });
}

/** The cached model a manifest or index digest stands for (an index's chosen child, as pull picks it). */
async function cachedModelOf(store: Store, digest: string): Promise<string | undefined> {
  if (await readModelSafely(store, digest)) return digest;
  const body = await store.readManifest(digest);
  if (!body) return undefined;
  try {
    const parsed = parseManifest(body, undefined);
    if (parsed.kind !== "index") return undefined;
    const child = selectManifestFromIndex(parsed.index).digest;
    return (await readModelSafely(store, child)) ? child : undefined;
  } catch {
    return undefined;
  }
}

async function findModelById(store: Store, entries: RefEntry[], prefix: string): Promise<string | undefined> {
  const candidates = new Set(entries.map((e) => e.record.manifestDigest));
  for (const model of await store.listModels()) {
    if (model.record) candidates.add(model.manifestDigest);
  }
  const matches = [...candidates].filter((digest) => digest.slice(digest.indexOf(":") + 1).startsWith(prefix));
  if (matches.length > 1) {
    throw new LlamaOciError("INVALID_ARGUMENT", `model ID ${prefix} is ambiguous: it matches ${matches.length} models`, {
      hint: "give more digits of the ID",
    });
  }
  return matches[0];
}

/** The name as typed, with what it expands to when that differs: "smollm2 (docker.io/ai/smollm2:latest)". */
export function describeInput(input: string): string {
  try {
    const canonical = formatReference(parseReference(input));
    return canonical === input ? input : `${input} (${canonical})`;
  } catch {
    return input;
  }
}

/** The familiar name of a record, for messages like "Untagged: ...". */
export function entryName(entry: RefEntry): string {
  const ref = entryReference(entry);
  if (ref) return familiarReference(ref);
  return `${entry.registry}/${entry.repository}${entry.tag !== undefined ? `:${entry.tag}` : `@${entry.digest}`}`;
}
