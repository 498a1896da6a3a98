/**
 * The one way from what a reference names to the model manifest, for the registry and the cache alike: the
 * manifest itself, or the child of an image index that platform.ts picks. An index inside an index is refused.
 */
import { LlamaOciError } from "../../errors.js";
import type { ImageManifest, ParsedManifest, Platform } from "./manifest.js";
import { selectManifestFromIndex } from "./platform.js";

/** A manifest or index as read: raw bytes, digest and parsed form. */
export interface ManifestDocument {
  body: Buffer;
  digest: string;
  mediaType: string;
  parsed: ParsedManifest;
}

export interface ResolvedModel {
  /** What the reference names: the model manifest, or an index holding it. */
  top: ManifestDocument;
  /** The model manifest (top itself when it is no index). */
  model: ManifestDocument;
  manifest: ImageManifest;
  /** Set when top is an index. */
  indexDigest?: string;
}

/** The digest of the model manifest a document stands for: its own, or that of the index child to use. */
export function modelManifestDigest(document: { digest: string; parsed: ParsedManifest }, platform?: Platform): string {
  return document.parsed.kind === "index" ? selectManifestFromIndex(document.parsed.index, platform).digest : document.digest;
}

/** Resolves `top` to its model manifest, loading an index's child with `load`. `what` names it in errors. */
export async function resolveModelManifest(
  top: ManifestDocument,
  load: (digest: string) => Promise<ManifestDocument>,
  what: string,
  platform?: Platform,
): Promise<ResolvedModel> {
  const model = top.parsed.kind === "index" ? await load(modelManifestDigest(top, platform)) : top;
  if (model.parsed.kind !== "manifest") {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${what}: an index inside an index is not a model artifact`);
  }
  const resolved: ResolvedModel = { top, model, manifest: model.parsed.manifest };
  if (top !== model) resolved.indexDigest = top.digest;
  return resolved;
}
