/**
 * pushModel(): uploads a cached model (its manifest, config and every layer) to the registry and repository its
 * reference names. Blobs the repository has are skipped after a HEAD, blobs cached from another repository of the
 * same registry are mounted, the rest are uploaded from the cache; the manifest goes last, under the tag.
 */
import { LlamaOciError } from "../errors.js";
import { createLogger } from "../log.js";
import { runPool } from "../util/pool.js";
import { mountSources } from "./cache/index.js";
import { ANNOTATION_FILEPATH, ANNOTATION_TITLE, parseManifest, type Descriptor } from "./model/index.js";
import { formatReference, parseReference, sha256Digest, type Reference } from "./name/index.js";
import type { ProgressListener, PushOutcome } from "./progress.js";
import { blobExists, connectRegistry, mountBlob, putManifest, uploadBlob, type RegistryAccessOptions, type UploadTarget } from "./remote/index.js";
import { defaultCacheDir, Store } from "./store/index.js";
import { HttpClient, retryPolicy, withRetries, type RetryPolicy } from "./transport/index.js";

/** Blobs up to this size go up in one PUT; larger ones in PATCH requests of this size. */
export const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;

export interface PushOptions extends RegistryAccessOptions {
  onProgress?: ProgressListener;
  /** Retries of a blob after a dropped connection, 429 or 5xx (attempts, backoff). */
  retry?: Partial<RetryPolicy>;
  /** Blobs uploaded at once (default 3). */
  concurrency?: number;
  /** Bytes per PATCH request; blobs up to this size are sent in a single PUT (default 16 MiB). */
  chunkSize?: number;
}

export interface PushedBlob {
  digest: string;
  size: number;
  mediaType: string;
  outcome: PushOutcome;
  /** The repository it was mounted from. */
  from?: string;
}

export interface PushResult {
  /** The canonical reference pushed, e.g. "registry.example.com/team/model:Q4_0". */
  reference: string;
  /** Digest of the pushed manifest. */
  digest: string;
  mediaType: string;
  /** Bytes of the config and all layers. */
  size: number;
  blobs: PushedBlob[];
  /** Blob bytes sent to the registry by this push. */
  bytesUploaded: number;
}

interface LocalBlob {
  descriptor: Descriptor;
  filename: string;
  isConfig: boolean;
}

export async function pushModel(reference: string, options: PushOptions = {}): Promise<PushResult> {
  const env = options.env ?? process.env;
  const logger = createLogger({ verbose: options.verbose, onWarning: options.onWarning, onDebug: options.onDebug, env });
  const ref = parseReference(reference);
  const canonical = formatReference(ref);
  const store = new Store(options.cacheDir ?? defaultCacheDir(env));
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) {
    throw new LlamaOciError("INVALID_ARGUMENT", `chunkSize must be a positive integer (got ${chunkSize})`);
  }

  const { manifestDigest, body } = await cachedManifest(store, ref, canonical);
  const parsed = parseManifest(body, undefined);
  if (parsed.kind !== "manifest") {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${canonical} is an image index; push one of its manifests by tag instead`);
  }
  const blobs = await localBlobs(store, manifestDigest, [parsed.manifest.config, ...parsed.manifest.layers]);
  const sources = await mountSources(store, ref.registry, ref.repository);

  const http = new HttpClient({ logger, env, retry: options.retry });
  try {
    const client = await connectRegistry({
      registry: ref.registry,
      repository: ref.repository,
      apiHost: ref.apiHost,
      http,
      logger,
      env,
      explicit: options.credentials,
      insecureRegistries: options.insecureRegistries,
      credentialHelperTimeoutMs: options.credentialHelperTimeoutMs,
      signal: options.signal,
    });

    const target: UploadTarget = { client, repository: ref.repository, logger, signal: options.signal };
    const totalBytes = blobs.reduce((sum, blob) => sum + blob.descriptor.size, 0);
    // As for pulls, progress shows the model's files; the config blob goes up silently.
    const layers = blobs.filter((blob) => !blob.isConfig);
    const layerBytes = layers.reduce((sum, blob) => sum + blob.descriptor.size, 0);
    options.onProgress?.({ type: "push-resolved", reference: canonical, digest: manifestDigest, files: layers.length, totalBytes: layerBytes });

    const policy = retryPolicy(options.retry);
    // A failed blob is pushed again from its HEAD, after a dropped connection, 429 or 5xx.
    const pushed = await runPool(blobs, options.concurrency ?? 3, (blob) =>
      withRetries(
        () => pushBlob(store, target, blob, sources.get(blob.descriptor.digest) ?? [], chunkSize, blob.isConfig ? undefined : options.onProgress),
        {
          policy,
          signal: options.signal,
          onRetry: (retry) => {
            const { digest } = blob.descriptor;
            logger.debug(`push of ${digest} failed (${retry.reason}); retrying in ${retry.delayMs} ms`);
            options.onProgress?.({ type: "layer-retry", digest, ...retry });
          },
        },
      ),
    );
    const echoed = await putManifest(target, ref.tag ?? manifestDigest, body, parsed.mediaType);
    if (echoed !== undefined && echoed !== manifestDigest && echoed !== sha256Digest(body)) {
      throw new LlamaOciError("REGISTRY", `${ref.registry} stored the manifest of ${canonical} as ${echoed}, not ${manifestDigest}`);
    }
    return {
      reference: canonical,
      digest: manifestDigest,
      mediaType: parsed.mediaType,
      size: totalBytes,
      blobs: pushed,
      bytesUploaded: pushed.filter((blob) => blob.outcome === "pushed").reduce((sum, blob) => sum + blob.size, 0),
    };
  } finally {
    await http.close();
  }
}

/** The manifest a reference names in the cache: a tag record, or a manifest stored under the digest. */
async function cachedManifest(store: Store, ref: Reference, canonical: string): Promise<{ manifestDigest: string; body: Buffer }> {
  const manifestDigest = ref.tag ? (await store.refs.readTag(ref.registry, ref.repository, ref.tag))?.manifestDigest : ref.digest;
  const body = manifestDigest ? await store.manifests.read(manifestDigest) : undefined;
  if (!manifestDigest || !body) {
    throw new LlamaOciError("NOT_FOUND", `${canonical} is not in the local cache (${store.root})`, {
      hint: "package it with 'llama-oci package', pull it, or give a cached model this name with 'llama-oci tag'",
    });
  }
  return { manifestDigest, body };
}

/** Each distinct blob once, config first, with the name it has in the model folder (for progress lines). */
async function localBlobs(store: Store, manifestDigest: string, descriptors: Descriptor[]): Promise<LocalBlob[]> {
  const record = await store.models.read(manifestDigest);
  const names = new Map(record?.files.map((file) => [file.digest, file.filename]) ?? []);
  const seen = new Set<string>();
  const blobs: LocalBlob[] = [];
  descriptors.forEach((descriptor, i) => {
    if (seen.has(descriptor.digest)) return;
    seen.add(descriptor.digest);
    const annotated = descriptor.annotations?.[ANNOTATION_FILEPATH] ?? descriptor.annotations?.[ANNOTATION_TITLE];
    const filename = i === 0 ? "config" : (names.get(descriptor.digest) ?? annotated ?? descriptor.mediaType);
    blobs.push({ descriptor, filename, isConfig: i === 0 });
  });
  return blobs;
}

async function pushBlob(
  store: Store,
  target: UploadTarget,
  blob: LocalBlob,
  sources: string[],
  chunkSize: number,
  onProgress: ProgressListener | undefined,
): Promise<PushedBlob> {
  const { digest, size, mediaType } = blob.descriptor;
  const done = (outcome: PushOutcome, from?: string): PushedBlob => {
    onProgress?.({ type: "layer-pushed", digest, size, outcome, ...(from === undefined ? {} : { from }) });
    return { digest, size, mediaType, outcome, ...(from === undefined ? {} : { from }) };
  };
  if (await blobExists(target, digest)) return done("exists");

  let location: string | undefined;
  const from = sources[0];
  if (from !== undefined) {
    const mount = await mountBlob(target, digest, from);
    if (mount.mounted) return done("mounted", from);
    location = mount.location;
  }

  if (!(await store.blobs.has(digest, size))) {
    const where = `${target.client.registry}/${target.repository}`;
    throw new LlamaOciError("CACHE", `${blob.filename} (${digest}) is not in the local cache, and ${where} does not have it`, {
      hint: "llama-oci caches only the files llama.cpp uses; push from the model's original source, or pull it again",
    });
  }
  onProgress?.({ type: "layer-push-start", digest, size, filename: blob.filename });
  await uploadBlob(target, {
    digest,
    size,
    path: store.blobs.path(digest),
    chunkSize,
    ...(location === undefined ? {} : { location }),
    onProgress: (completed) => onProgress?.({ type: "layer-push-progress", digest, size, completed }),
  });
  return done("pushed");
}
