/**
 * tagModel(): `llama-oci tag`. A second local name for a cached model: a new tag record pointing at the same
 * manifest, so `pull <new name> --offline` finds it and rm of either name keeps the model for the other.
 */
import { LlamaOciError } from "../../errors.js";
import { OCI_MANIFEST, parseManifest } from "../model/index.js";
import { familiarReference, formatReference, parseReference } from "../name/index.js";
import type { Store, TagRecord } from "../store/index.js";
import { openStore, type CacheOptions } from "./list.js";
import { describeInput, resolveLocal, type LocalTarget } from "./names.js";

export interface TagResult {
  /** The new name, in the familiar form. */
  reference: string;
  /** The model manifest digest both names now point at. */
  digest: string;
}

export async function tagModel(source: string, target: string, options: CacheOptions = {}): Promise<TagResult> {
  const store = openStore(options);
  const dst = parseReference(target);
  if (dst.tag === undefined) {
    throw new LlamaOciError("INVALID_ARGUMENT", `the new name ${target} must be a tag, not a digest`, {
      hint: "use the form [registry/]repository[:tag], e.g. team/model:v1",
    });
  }
  let found: LocalTarget;
  try {
    found = await resolveLocal(store, source);
  } catch (error) {
    if (error instanceof LlamaOciError && error.code === "NOT_FOUND") {
      throw new LlamaOciError("NOT_FOUND", `${describeInput(source)} is not in the cache (${store.root})`, {
        hint: `pull it first: llama-oci pull ${source}`,
      });
    }
    throw error;
  }
  const from = await sourceRecord(store, found);
  await checkCached(store, source, from.manifestDigest);
  await store.refs.writeTag(dst.registry, dst.repository, dst.tag, { ...from, reference: formatReference(dst) });
  return { reference: familiarReference(dst), digest: from.manifestDigest };
}

/** What the new tag copies: the source tag's record, or one made from the cached manifest. */
async function sourceRecord(store: Store, found: LocalTarget): Promise<TagRecord> {
  if (found.kind === "tag") return found.entry.record;
  const named = found.entries[0]?.record;
  if (named) return named;
  const model = await store.models.read(found.manifestDigest);
  const body = await store.manifests.read(found.manifestDigest);
  let mediaType = OCI_MANIFEST;
  try {
    if (body) mediaType = parseManifest(body, undefined).mediaType;
  } catch {
    // unreadable: the tag record keeps the OCI default, which pull does not depend on
  }
  return {
    reference: "",
    digest: found.manifestDigest,
    mediaType,
    manifestDigest: found.manifestDigest,
    resolvedAt: model?.verifiedAt ?? new Date().toISOString(),
  };
}

/** The model must be usable offline: its record and every file present. */
async function checkCached(store: Store, source: string, manifestDigest: string): Promise<void> {
  const model = await store.models.read(manifestDigest);
  const missing = model ? await Promise.all(model.files.map(async (f) => !(await store.blobs.has(f.digest, f.size)))) : [true];
  if (missing.some(Boolean)) {
    throw new LlamaOciError("NOT_FOUND", `${source} is only partly in the cache: some of its files are missing`, {
      hint: `pull it again: llama-oci pull ${source}`,
    });
  }
}
