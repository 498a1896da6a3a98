/**
 * saveModel(): `llama-oci save <reference> oci:<dir>[:<tag>]`. Writes a cached model (its manifest, config and
 * every layer) into an OCI image layout, as skopeo would: `oci-layout`, `blobs/<algorithm>/<hex>` and `index.json`
 * naming the manifest with org.opencontainers.image.ref.name (and the reference it came from, for pulls on the other
 * side). A layout that exists already keeps its other manifests; the same name is replaced. Every file is fsynced.
 */
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { LlamaOciError } from "../../errors.js";
import { resolveLocal, type CacheOptions } from "../cache/index.js";
import { OCI_INDEX, parseManifest, type Descriptor } from "../model/index.js";
import { formatReference, parseDigest } from "../name/index.js";
import { defaultCacheDir, fsyncDir, fsyncFile, Store } from "../store/index.js";
import { IMAGE_NAME, REF_NAME, parseLayoutLocation } from "./location.js";

export interface SaveOptions extends CacheOptions {
  /** Called as each blob is written (or found there already). */
  onBlob?: (blob: { digest: string; size: number; written: boolean }) => void;
}

export interface SaveResult {
  /** The folder written to. */
  dir: string;
  /** The name given to the manifest in index.json. */
  tag: string;
  /** The model manifest digest. */
  digest: string;
  /** The cached model's reference, recorded in the layout. */
  reference: string;
  /** Bytes of blobs written (those already in the layout are not). */
  bytesWritten: number;
}

export async function saveModel(reference: string, target: string, options: SaveOptions = {}): Promise<SaveResult> {
  const store = new Store(options.cacheDir ?? defaultCacheDir(options.env ?? process.env));
  const location = parseLayoutLocation(target);
  const found = await resolveLocal(store, reference);
  const manifestDigest = found.kind === "tag" ? found.entry.record.manifestDigest : found.manifestDigest;
  const named = found.kind === "tag" ? found.ref : found.kind === "digest" ? found.ref : undefined;
  const body = await store.manifests.read(manifestDigest);
  if (!body) throw new LlamaOciError("NOT_FOUND", `the manifest of ${reference} is not in the cache`, { hint: `pull it again: llama-oci pull ${reference}` });
  const parsed = parseManifest(body, undefined);
  if (parsed.kind !== "manifest") throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${reference} is an image index; save one of its manifests`);
  const tag = location.tag ?? named?.tag ?? "latest";

  await mkdir(join(location.dir, "blobs"), { recursive: true });
  let bytesWritten = 0;
  for (const descriptor of [parsed.manifest.config, ...parsed.manifest.layers]) {
    bytesWritten += await writeBlob(store, location.dir, descriptor, reference, options);
  }
  bytesWritten += await writeBytes(location.dir, manifestDigest, body);
  await writeDurable(join(location.dir, "oci-layout"), Buffer.from(`${JSON.stringify({ imageLayoutVersion: "1.0.0" })}\n`));

  const annotations: Record<string, string> = { [REF_NAME]: tag };
  if (named) annotations[IMAGE_NAME] = formatReference({ ...named, tag, digest: undefined });
  const entry: Descriptor = { mediaType: parsed.mediaType, digest: manifestDigest, size: body.length, annotations };
  const index = await readIndexJson(location.dir);
  index.manifests = [...index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag), entry];
  await writeDurable(join(location.dir, "index.json"), Buffer.from(`${JSON.stringify(index, null, 2)}\n`));
  return { dir: location.dir, tag, digest: manifestDigest, reference: named ? formatReference(named) : manifestDigest, bytesWritten };
}

interface IndexJson {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  [key: string]: unknown;
}

async function readIndexJson(dir: string): Promise<IndexJson> {
  let text: string;
  try {
    text = await readFile(join(dir, "index.json"), "utf8");
  } catch {
    return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
  }
  const parsed = parseManifest(Buffer.from(text), undefined);
  if (parsed.kind !== "index") throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${join(dir, "index.json")} is not an image index`);
  // Keep what other tools wrote (annotations, extra fields); only the manifests list changes.
  const raw = JSON.parse(text) as IndexJson;
  return { ...raw, schemaVersion: 2, mediaType: raw.mediaType ?? OCI_INDEX, manifests: parsed.index.manifests };
}

function layoutBlobPath(dir: string, digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return join(dir, "blobs", algorithm, hex);
}

async function writeBlob(store: Store, dir: string, descriptor: Descriptor, reference: string, options: SaveOptions): Promise<number> {
  const target = layoutBlobPath(dir, descriptor.digest);
  if ((await stat(target).catch(() => undefined))?.size === descriptor.size) {
    options.onBlob?.({ digest: descriptor.digest, size: descriptor.size, written: false });
    return 0;
  }
  if (!(await store.blobs.has(descriptor.digest, descriptor.size))) {
    throw new LlamaOciError("CACHE", `${descriptor.digest} (${descriptor.mediaType}) of ${reference} is not in the local cache`, {
      hint: "llama-oci caches only the files llama.cpp uses; save from a model whose every layer was pulled, or pull it again",
    });
  }
  await mkdir(dirname(target), { recursive: true });
  const temp = `${target}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await copyFile(store.blobs.path(descriptor.digest), temp);
    await fsyncFile(temp);
    await rename(temp, target);
  } finally {
    await rm(temp, { force: true });
  }
  await fsyncDir(dirname(target));
  options.onBlob?.({ digest: descriptor.digest, size: descriptor.size, written: true });
  return descriptor.size;
}

async function writeBytes(dir: string, digest: string, data: Buffer): Promise<number> {
  const target = layoutBlobPath(dir, digest);
  if ((await stat(target).catch(() => undefined))?.size === data.length) return 0;
  await mkdir(dirname(target), { recursive: true });
  await writeDurable(target, data);
  return data.length;
}

async function writeDurable(path: string, data: Buffer): Promise<void> {
  const temp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(temp, data);
    await fsyncFile(temp);
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  await fsyncDir(dirname(path));
}
