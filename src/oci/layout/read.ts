/**
 * Pulling from an OCI image layout: oci-layout and index.json read and checked, the manifest named by the tag (and
 * an index's model child) resolved as from a registry, every blob copied into the cache and verified against its
 * digest; nothing enters the cache that does not match. The model is recorded under the reference it was saved
 * from (io.containerd.image.name) when the layout says so, else under localhost/oci-layout/<folder>:<tag>.
 */
import { readFile, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { LlamaOciError } from "../../errors.js";
import type { Logger } from "../../log.js";
import {
  MAX_MANIFEST_BYTES,
  modelFiles,
  parseManifest,
  resolveModelManifest,
  type Descriptor,
  type ManifestDocument,
  type Platform,
} from "../model/index.js";
import { digestOf, formatReference, parseDigest, parseReference, type Reference } from "../name/index.js";
import type { ProgressListener } from "../progress.js";
import { buildResult, type PullResult } from "../pull-result.js";
import { assertFreeSpace, importFileBlob, type ModelRecord, type Store, type StoredFile } from "../store/index.js";
import { IMAGE_NAME, REF_NAME, type LayoutLocation } from "./location.js";

export interface LayoutPullOptions {
  store: Store;
  logger: Logger;
  platform?: Platform;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

interface LayoutIndexEntry {
  descriptor: Descriptor;
  name?: string;
}

export async function pullFromLayout(location: LayoutLocation, options: LayoutPullOptions): Promise<PullResult> {
  const { store } = options;
  const where = `the OCI layout ${location.dir}`;
  await checkLayoutMarker(location.dir);
  const entries = await readIndex(location.dir);
  const entry = pickEntry(entries, location, where);
  const top = await readManifest(location.dir, entry.descriptor.digest, `${where}${location.tag ? `:${location.tag}` : ""}`);
  const { model, manifest } = await resolveModelManifest(
    top,
    (digest) => readManifest(location.dir, digest, `${where} (manifest ${digest})`),
    where,
    options.platform,
  );
  const { format, files } = modelFiles(manifest);
  const stored: StoredFile[] = files.map((f) => ({
    kind: f.kind,
    mediaType: f.descriptor.mediaType,
    digest: f.descriptor.digest,
    size: f.descriptor.size,
    filename: f.filename,
  }));
  const config: StoredFile = { kind: "config", mediaType: manifest.config.mediaType, digest: manifest.config.digest, size: manifest.config.size, filename: "config" };
  const ref = recordName(entry, location);
  const canonical = formatReference(ref);
  options.onProgress?.({ type: "resolved", reference: canonical, digest: model.digest, files: stored.length, totalBytes: stored.reduce((n, f) => n + f.size, 0) });
  await assertFreeSpace(store, [config, ...stored]);
  let copied = 0;
  for (const file of [config, ...stored]) copied += await copyBlob(location.dir, file, options);

  if (top !== model) await store.manifests.write(top.digest, top.body);
  await store.manifests.write(model.digest, model.body);
  const record: ModelRecord = { manifestDigest: model.digest, format, configDigest: config.digest, files: stored, verifiedAt: new Date().toISOString() };
  const modelDir = await store.models.link(model.digest, stored);
  await store.models.write(record);
  await store.refs.writeTag(ref.registry, ref.repository, ref.tag!, {
    reference: canonical,
    digest: top.digest,
    mediaType: top.mediaType,
    manifestDigest: model.digest,
    resolvedAt: new Date().toISOString(),
  });
  options.logger.debug(`${where}: ${model.digest} recorded as ${canonical}`);
  return buildResult(canonical, record, modelDir, copied === 0, 0);
}

/** The layout's marker file: its presence and a version this reader knows. */
async function checkLayoutMarker(dir: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(join(dir, "oci-layout"), "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new LlamaOciError("NOT_FOUND", `${dir} is not an OCI image layout (${code === "ENOENT" ? "it has no oci-layout file" : `oci-layout cannot be read: ${code ?? "error"}`})`, {
      hint: "give the folder skopeo copy ... oci:<folder> or llama-oci save wrote",
    });
  }
  let version: unknown;
  try {
    version = (JSON.parse(text) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    version = undefined;
  }
  if (typeof version !== "string" || !/^1\.\d+\.\d+$/.test(version)) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${dir}/oci-layout does not name an image layout version 1.x`);
  }
}

async function readIndex(dir: string): Promise<LayoutIndexEntry[]> {
  const path = join(dir, "index.json");
  const body = await readCapped(path, MAX_MANIFEST_BYTES, "index.json");
  const parsed = parseManifest(body, undefined);
  if (parsed.kind !== "index") throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${path} is not an image index`);
  return parsed.index.manifests.map((descriptor) => ({ descriptor, name: descriptor.annotations?.[REF_NAME] }));
}

function pickEntry(entries: LayoutIndexEntry[], location: LayoutLocation, where: string): LayoutIndexEntry {
  const names = entries.map((e) => e.name).filter((n): n is string => n !== undefined);
  if (location.tag === undefined) {
    if (entries.length === 1) return entries[0]!;
    throw new LlamaOciError("INVALID_REFERENCE", `${where} holds ${entries.length} manifests; name one (${names.join(", ") || "none is named"})`, {
      hint: `use oci:${location.dir}:<name>`,
    });
  }
  const tag = location.tag;
  const found = entries.find((e) => e.name === tag || (e.name !== undefined && e.name.endsWith(`:${tag}`)));
  if (!found) {
    throw new LlamaOciError("NOT_FOUND", `${where} has no manifest named ${JSON.stringify(location.tag)} (it has: ${names.join(", ") || "no named manifests"})`);
  }
  return found;
}

/** The name the model is recorded under: the reference it was saved from, else one made from the folder. */
function recordName(entry: LayoutIndexEntry, location: LayoutLocation): Reference {
  const saved = entry.descriptor.annotations?.[IMAGE_NAME];
  if (saved !== undefined) {
    try {
      const ref = parseReference(saved);
      if (ref.tag !== undefined) return ref;
    } catch {
      // not a reference: fall back to the folder's name
    }
  }
  const folder = basename(location.dir).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[._-]+|[._-]+$/g, "") || "layout";
  const tag = location.tag ?? (entry.name !== undefined && /^[\w][\w.-]{0,127}$/.test(entry.name) ? entry.name : "latest");
  return parseReference(`localhost/oci-layout/${folder}:${tag}`);
}

function blobPath(dir: string, digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return join(dir, "blobs", algorithm, hex);
}

async function readManifest(dir: string, digest: string, what: string): Promise<ManifestDocument> {
  const body = await readCapped(blobPath(dir, digest), MAX_MANIFEST_BYTES, what);
  const actual = digestOf(body, parseDigest(digest).algorithm);
  if (actual !== digest) {
    throw new LlamaOciError("DIGEST_MISMATCH", `${what}: the layout's blob ${digest} has digest ${actual}`, { hint: "the layout is damaged; copy it again" });
  }
  const parsed = parseManifest(body, undefined);
  return { body, digest, mediaType: parsed.mediaType, parsed };
}

async function readCapped(path: string, max: number, what: string): Promise<Buffer> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    throw new LlamaOciError("NOT_FOUND", `${what}: ${path} is missing`, { hint: "the layout is incomplete; copy it again" });
  }
  if (size > max) throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${what}: ${path} is larger than ${max} bytes`);
  return readFile(path);
}

/** Copies one blob into the cache unless it is there; returns the bytes copied. A mismatch leaves nothing behind. */
async function copyBlob(dir: string, file: StoredFile, options: LayoutPullOptions): Promise<number> {
  const { store } = options;
  if (await store.blobs.has(file.digest, file.size)) {
    if (file.kind !== "config") options.onProgress?.({ type: "layer-done", digest: file.digest, size: file.size, fromCache: true });
    return 0;
  }
  const source = blobPath(dir, file.digest);
  const info = await stat(source).catch(() => undefined);
  if (!info?.isFile()) throw new LlamaOciError("NOT_FOUND", `${file.filename} (${file.digest}) is missing from the OCI layout ${dir}`, { hint: "the layout is incomplete; copy it again" });
  if (info.size !== file.size) {
    throw new LlamaOciError("SIZE_MISMATCH", `${file.filename} in the OCI layout ${dir} is ${info.size} bytes, the manifest says ${file.size}`, { hint: "the layout is damaged; nothing was cached" });
  }
  if (parseDigest(file.digest).algorithm !== "sha256") {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${file.digest}: only sha256 blobs can be imported from an OCI layout`);
  }
  if (file.kind !== "config") options.onProgress?.({ type: "layer-start", digest: file.digest, size: file.size, filename: file.filename, resumeFrom: 0 });
  const imported = await importFileBlob(store, source, { signal: options.signal });
  if (imported.digest !== file.digest) {
    // The copy sits under the digest it really has, where nothing references it (prune removes it); the model is
    // not recorded.
    throw new LlamaOciError("DIGEST_MISMATCH", `${file.filename} in the OCI layout ${dir} has digest ${imported.digest}, not ${file.digest}`, {
      hint: "the layout is damaged; the model was not cached",
    });
  }
  if (file.kind !== "config") options.onProgress?.({ type: "layer-done", digest: file.digest, size: file.size, fromCache: false });
  return file.size;
}
