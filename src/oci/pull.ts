/**
 * pull(): from a reference string to verified model files on disk. Resolves the reference (a manifest HEAD when
 * the tag is cached, so an unchanged model costs no GET), picks the model manifest from an index, downloads
 * every file of the artifact (all shards, projector, template, licenses) and lays them out for llama.cpp.
 */

import { isAbort, LlamaOciError } from "../errors.js";
import { isLayoutReference, parseLayoutLocation, pullFromLayout } from "./layout/index.js";
import { buildResult, withArtifactExtras, type PullResult } from "./pull-result.js";
import { createLogger, isTruthy, type Logger } from "../log.js";
import { runPool } from "../util/pool.js";
import { ConnectionBudget, downloadBlob, MAX_CONNECTIONS_LIMIT, parallelSettings, type ParallelDownloadOptions } from "./download/index.js";
import {
  MAX_CONFIG_BYTES,
  modelFiles,
  modelManifestDigest,
  parseManifest,
  parsePlatform,
  type ImageManifest,
  type Platform,
  type ResolvedModel,
} from "./model/index.js";
import { formatReference, parseReference, type Reference } from "./name/index.js";
import type { ProgressListener } from "./progress.js";
import {
  configuredMirrors,
  connectRegistry,
  fetchModelManifest,
  headManifest,
  pullEndpoints,
  type PullEndpoint,
  type RegistryAccessOptions,
} from "./remote/index.js";
import { assertFreeSpace, defaultCacheDir, digestFile, Store, type ModelRecord, type StoredFile, type TagRecord } from "./store/index.js";
import { describeNetworkError, HttpClient, type RegistryTransport, type RetryPolicy } from "./transport/index.js";

export interface PullOptions extends RegistryAccessOptions {
  /** Resolve from the cache only, with no network at all (also LLAMA_OCI_OFFLINE=1). */
  offline?: boolean;
  /** Re-hash cached files instead of trusting the verification recorded when they were downloaded. */
  verify?: boolean;
  /**
   * Registry mirrors, tried in order before the registry itself: "https://mirror.example.com" mirrors Docker Hub,
   * "registry.example.com=http://127.0.0.1:5001" mirrors that registry. Added to LLAMA_OCI_REGISTRY_MIRRORS
   * (comma-separated, same forms). A failing mirror is warned about and skipped.
   */
  registryMirrors?: string[];
  onProgress?: ProgressListener;
  retry?: Partial<RetryPolicy>;
  /** No bytes for this long counts as a stalled connection (default 30 s). */
  stallTimeoutMs?: number;
  /** Files downloaded at once (default 4). */
  concurrency?: number;
  /**
   * Large blobs over several connections: { maxConnections (default 16, for the whole pull, all files together;
   * also LLAMA_OCI_MAX_CONNECTIONS; 1 = one stream per file), initialConnections (4), minPartBytes (16 MiB: blobs
   * under 4x this are one request) }.
   */
  parallelDownload?: ParallelDownloadOptions;
  /**
   * Which child of an image index to pull, "os/arch[/variant]" (default DOCKER_DEFAULT_PLATFORM, else the model
   * child, else linux/amd64).
   */
  platform?: string;
}

interface PullContext {
  ref: Reference;
  canonical: string;
  /** --platform / DOCKER_DEFAULT_PLATFORM: which child of an index; undefined: the default rule. */
  platform?: Platform;
  store: Store;
  logger: Logger;
  options: PullOptions;
}

export type { PulledFile, PullResult } from "./pull-result.js";

export async function pull(reference: string, options: PullOptions = {}): Promise<PullResult> {
  const logger = createLogger({ verbose: options.verbose, onWarning: options.onWarning, onDebug: options.onDebug, env: options.env ?? process.env });
  return withArtifactExtras(await pullFiles(reference, options, logger), logger);
}

async function pullFiles(reference: string, options: PullOptions, logger: Logger): Promise<PullResult> {
  const env = options.env ?? process.env;
  if (isLayoutReference(reference)) {
    // An OCI layout folder: a local source, no network whatever the options say.
    return pullFromLayout(parseLayoutLocation(reference), {
      store: new Store(options.cacheDir ?? defaultCacheDir(env)),
      logger,
      platform: wantedPlatform(options.platform, env),
      onProgress: options.onProgress,
      signal: options.signal,
    });
  }
  const ref = parseReference(reference);
  const ctx: PullContext = {
    ref,
    canonical: formatReference(ref),
    store: new Store(options.cacheDir ?? defaultCacheDir(env)),
    logger,
    options,
    platform: wantedPlatform(options.platform, env),
  };
  if (options.offline ?? isTruthy(env.LLAMA_OCI_OFFLINE)) return pullOffline(ctx);

  // Enough pooled connections per origin for every connection the pull's blobs may open at once.
  const connections = pullParallel(options, env).maxConnections;
  const http = new HttpClient({ logger, env, retry: options.retry, connections: Math.max(8, connections) });
  try {
    return await pullOnline(ctx, http);
  } finally {
    await http.close();
  }
}

async function pullOffline(ctx: PullContext): Promise<PullResult> {
  const manifestDigest = await cachedManifestDigest(ctx);
  const result = manifestDigest ? await cachedResult(ctx, manifestDigest) : undefined;
  if (!result) {
    throw new LlamaOciError("OFFLINE", `${ctx.canonical} is not in the cache (${ctx.store.root}) and offline mode is on`, {
      hint: "pull it once while online, or turn off --offline / LLAMA_OCI_OFFLINE",
    });
  }
  return result;
}

/** The model manifest digest the reference resolved to last time, from the cache alone. */
async function cachedManifestDigest(ctx: PullContext): Promise<string | undefined> {
  const { ref, store } = ctx;
  if (ref.tag) {
    const tag = await store.refs.readTag(ref.registry, ref.repository, ref.tag);
    return tag ? cachedTagModel(ctx, tag) : undefined;
  }
  if (!ref.digest) return undefined;
  const body = await store.manifests.read(ref.digest);
  if (!body) return undefined;
  return modelManifestDigest({ digest: ref.digest, parsed: parseManifest(body, undefined) }, ctx.platform);
}

/** The parallel-download settings: the options, with LLAMA_OCI_MAX_CONNECTIONS when they do not say. */
function pullParallel(options: PullOptions, env: NodeJS.ProcessEnv): Required<ParallelDownloadOptions> {
  const raw = env.LLAMA_OCI_MAX_CONNECTIONS?.trim();
  let fromEnv: ParallelDownloadOptions = {};
  if (raw !== undefined && raw !== "") {
    const value = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!(value >= 1 && value <= MAX_CONNECTIONS_LIMIT)) {
      throw new LlamaOciError("INVALID_ARGUMENT", `LLAMA_OCI_MAX_CONNECTIONS must be a whole number from 1 to ${MAX_CONNECTIONS_LIMIT}, got "${raw}"`, {
        hint: "unset it for the default (16), or set 1 for one connection per file",
      });
    }
    fromEnv = { maxConnections: value };
  }
  return parallelSettings({ ...fromEnv, ...options.parallelDownload });
}

function wantedPlatform(option: string | undefined, env: NodeJS.ProcessEnv): Platform | undefined {
  if (option !== undefined) return parsePlatform(option, "platform");
  const fromEnv = env.DOCKER_DEFAULT_PLATFORM?.trim();
  return fromEnv ? parsePlatform(fromEnv, "DOCKER_DEFAULT_PLATFORM") : undefined;
}

/** Whether the cached tag's model is the one `platform` picks from its (cached) index. */
async function cachedChoiceFits(ctx: PullContext, tag: TagRecord): Promise<boolean> {
  return (await cachedTagModel(ctx, tag)) === tag.manifestDigest;
}

/** The model manifest a cached tag stands for on ctx.platform: its record's, or another child of its cached index. */
async function cachedTagModel(ctx: PullContext, tag: TagRecord): Promise<string | undefined> {
  if (ctx.platform === undefined || tag.digest === tag.manifestDigest) return tag.manifestDigest;
  const body = await ctx.store.manifests.read(tag.digest);
  if (!body) return undefined;
  try {
    return modelManifestDigest({ digest: tag.digest, parsed: parseManifest(body, undefined) }, ctx.platform);
  } catch {
    return undefined;
  }
}

async function pullOnline(ctx: PullContext, http: HttpClient): Promise<PullResult> {
  const { ref, store, logger, options } = ctx;
  const env = options.env ?? process.env;

  // A cached digest reference needs no network; a cached tag needs one HEAD to know it is current.
  if (ref.digest && !options.verify) {
    const manifestDigest = await cachedManifestDigest(ctx);
    const cached = manifestDigest ? await cachedResult(ctx, manifestDigest) : undefined;
    if (cached) return cached;
  }

  // Mirrors first, the registry itself last; one client (and one credential lookup) per endpoint, made when needed.
  const endpoints = pullEndpoints(ref, configuredMirrors(options.registryMirrors, env));
  const origin = endpoints[endpoints.length - 1]!;
  const clients = new Map<PullEndpoint, Promise<RegistryTransport>>();
  const clientFor = (endpoint: PullEndpoint): Promise<RegistryTransport> => {
    let client = clients.get(endpoint);
    if (!client) clients.set(endpoint, (client = openClient(ctx, http, endpoint)));
    return client;
  };

  const cachedTag = ref.tag ? await store.refs.readTag(ref.registry, ref.repository, ref.tag) : undefined;
  let served: ({ endpoint: PullEndpoint } & ResolvedModel) | undefined;
  for (const [i, endpoint] of endpoints.entries()) {
    try {
      const resolved = await resolveManifests(ctx, await clientFor(endpoint), endpoint, cachedTag);
      if ("cached" in resolved) return resolved.cached;
      served = { endpoint, ...resolved };
      break;
    } catch (error) {
      if (endpoint.kind === "mirror" && !isAbort(error) && !options.signal?.aborted) {
        logger.warn(`registry mirror ${endpoint.label} failed for ${ctx.canonical} (${errorText(error)}); trying ${describeEndpoint(endpoints[i + 1]!)}`);
        continue;
      }
      // Whatever made the registry check fail (unreachable, 5xx or 429 after retries, TLS, 401/403, a tag it no
      // longer has or never had), a cached copy of the tag is still a working model.
      if (cachedTag && !isAbort(error) && !options.signal?.aborted) {
        const manifestDigest = await cachedTagModel(ctx, cachedTag);
        const cached = manifestDigest ? await cachedResult(ctx, manifestDigest) : undefined;
        if (cached) {
          logger.warn(`${fallbackReason(ref.registry, error)}; using the cached copy of ${ctx.canonical}`);
          return cached;
        }
      }
      throw error;
    }
  }
  if (!served) throw new LlamaOciError("REGISTRY", `${ctx.canonical}: no registry endpoint to pull from`);
  const { top, model, manifest } = served;
  logger.debug(`${ctx.canonical}: manifest ${model.digest} from ${describeEndpoint(served.endpoint)}`);

  const { format, files } = modelFiles(manifest);
  if (manifest.config.size > MAX_CONFIG_BYTES) {
    throw new LlamaOciError(
      "UNSUPPORTED_ARTIFACT",
      `${ctx.canonical}: the config blob is ${manifest.config.size} bytes, more than a model config can be (${MAX_CONFIG_BYTES})`,
      { hint: "this does not look like a model artifact" },
    );
  }
  const stored: StoredFile[] = files.map((f) => ({
    kind: f.kind,
    mediaType: f.descriptor.mediaType,
    digest: f.descriptor.digest,
    size: f.descriptor.size,
    filename: f.filename,
  }));
  const totalBytes = stored.reduce((sum, f) => sum + f.size, 0);
  options.onProgress?.({ type: "resolved", reference: ctx.canonical, digest: model.digest, files: stored.length, totalBytes });

  if (options.verify) await reverifyBlobs(ctx, [...stored, configFile(manifest)]);
  const blobs = [configFile(manifest), ...stored];
  await assertFreeSpace(store, blobs);
  // Blobs come from the endpoint that served the manifest; a mirror that fails mid-way hands the rest to the origin.
  let blobEndpoint = served.endpoint;
  // One budget of connections for every file downloading at once: a large blob adds connections only while the
  // others leave some free.
  const parallel = pullParallel(options, env);
  const budget = new ConnectionBudget(parallel.maxConnections);
  const download = async (file: StoredFile, endpoint: PullEndpoint) =>
    downloadBlob({
      client: await clientFor(endpoint),
      store,
      repository: endpoint.repository,
      digest: file.digest,
      size: file.size,
      filename: file.filename,
      logger,
      onProgress: file.kind === "config" ? undefined : options.onProgress,
      signal: options.signal,
      retry: options.retry,
      stallTimeoutMs: options.stallTimeoutMs,
      parallel,
      budget,
    });
  const fetchBlob = async (file: StoredFile) => {
    const endpoint = blobEndpoint;
    try {
      return await download(file, endpoint);
    } catch (error) {
      if (endpoint.kind === "origin" || isAbort(error) || options.signal?.aborted) throw error;
      if (blobEndpoint === endpoint) {
        blobEndpoint = origin;
        logger.warn(`registry mirror ${endpoint.label} failed downloading ${file.filename} of ${ctx.canonical} (${errorText(error)}); downloading the rest from ${origin.label}`);
      }
      return download(file, origin);
    }
  };
  const transfers = await runPool(blobs, options.concurrency ?? 4, fetchBlob);
  // A blob found in the cache is not ours until the model record below references it: a concurrent `prune` may
  // delete it in between, as unreferenced. Fetch any that went missing once more before linking.
  const vanished = [];
  for (const file of blobs) if (!(await store.blobs.has(file.digest, file.size))) vanished.push(file);
  if (vanished.length > 0) {
    logger.debug(`${vanished.length} blob(s) of ${ctx.canonical} left the cache during the pull; fetching them again`);
    transfers.push(...(await runPool(vanished, options.concurrency ?? 4, fetchBlob)));
  }

  await store.manifests.write(model.digest, model.body);
  const record: ModelRecord = {
    manifestDigest: model.digest,
    format,
    configDigest: manifest.config.digest,
    files: stored,
    verifiedAt: new Date().toISOString(),
  };
  const modelDir = await store.models.link(model.digest, stored);
  await store.models.write(record);
  const refRecord = {
    reference: ctx.canonical,
    digest: top.digest,
    mediaType: top.mediaType,
    manifestDigest: model.digest,
    resolvedAt: new Date().toISOString(),
  };
  // A pull by digest is recorded too, so that ls shows it and prune keeps it.
  if (ref.tag) await store.refs.writeTag(ref.registry, ref.repository, ref.tag, refRecord);
  else if (ref.digest) await store.refs.writeDigest(ref.registry, ref.repository, ref.digest, refRecord);
  const bytesTransferred = transfers.reduce((sum, t) => sum + t.bytesTransferred, 0);
  const result = buildResult(ctx.canonical, record, modelDir, bytesTransferred === 0 && transfers.every((t) => t.fromCache), bytesTransferred);
  return served.endpoint.kind === "mirror" ? { ...result, mirror: served.endpoint.label } : result;
}

/** A client for one endpoint, with the credentials of that endpoint's own host (explicit ones go to the origin only). */
async function openClient(ctx: PullContext, http: HttpClient, endpoint: PullEndpoint): Promise<RegistryTransport> {
  const { options } = ctx;
  return connectRegistry({
    registry: endpoint.registry,
    repository: endpoint.repository,
    apiHost: endpoint.apiHost,
    scheme: endpoint.scheme,
    http,
    logger: ctx.logger,
    env: options.env ?? process.env,
    explicit: endpoint.kind === "origin" ? options.credentials : undefined,
    insecureRegistries: options.insecureRegistries,
    credentialHelperTimeoutMs: options.credentialHelperTimeoutMs,
    signal: options.signal,
  });
}

/**
 * The reference's manifest (and, for an index, the model manifest in it) from one endpoint; or the cached result
 * when a HEAD shows the cached tag is still current.
 */
async function resolveManifests(
  ctx: PullContext,
  client: RegistryTransport,
  endpoint: PullEndpoint,
  cachedTag: TagRecord | undefined,
): Promise<{ cached: PullResult } | ResolvedModel> {
  const { ref, store, logger, options } = ctx;
  if (cachedTag) {
    const head = await headManifest(client, endpoint.repository, ref.tag!, options.signal);
    if (head?.digest === cachedTag.digest && (await cachedChoiceFits(ctx, cachedTag))) {
      const cached = options.verify ? undefined : await cachedResult(ctx, cachedTag.manifestDigest);
      if (cached) return { cached };
    }
  }
  const resolved = await fetchModelManifest(client, endpoint.repository, ref.digest ?? ref.tag!, ctx.canonical, options.signal, ctx.platform);
  if (resolved.indexDigest !== undefined) {
    await store.manifests.write(resolved.top.digest, resolved.top.body);
    logger.debug(`index ${resolved.indexDigest}: using manifest ${resolved.model.digest}`);
  }
  return resolved;
}

/** Why the registry could not confirm a cached tag, for the one warning line of a fallback to the cache. */
function fallbackReason(registry: string, error: unknown): string {
  const code = error instanceof LlamaOciError ? error.code : undefined;
  const text = errorText(error);
  if (code === "NETWORK") return `${registry} is unreachable (${text})`;
  if (code === "NOT_FOUND") return `${registry} does not have it (${text})`;
  return `${registry} could not be checked (${text})`;
}

function describeEndpoint(endpoint: PullEndpoint): string {
  return endpoint.kind === "mirror" ? `mirror ${endpoint.label}` : `the registry ${endpoint.label}`;
}

function errorText(error: unknown): string {
  return error instanceof LlamaOciError ? error.message : describeNetworkError(error);
}

function configFile(manifest: ImageManifest): StoredFile {
  return { kind: "config", mediaType: manifest.config.mediaType, digest: manifest.config.digest, size: manifest.config.size, filename: "config" };
}

/** The result for a model whose files are all in the cache, or undefined. */
async function cachedResult(ctx: PullContext, manifestDigest: string): Promise<PullResult | undefined> {
  const { store, options } = ctx;
  const record = await store.models.read(manifestDigest);
  if (!record) return undefined;
  for (const file of record.files) {
    if (!(await store.blobs.has(file.digest, file.size))) return undefined;
  }
  if (options.verify) {
    const bad = await reverifyBlobs(ctx, record.files);
    if (bad > 0) return undefined;
  }
  const modelDir = await store.models.link(manifestDigest, record.files);
  for (const file of record.files) options.onProgress?.({ type: "layer-done", digest: file.digest, size: file.size, fromCache: true });
  return buildResult(ctx.canonical, record, modelDir, true, 0);
}

/** Re-hashes cached blobs; a blob that no longer matches its digest is removed. Returns how many were bad. */
async function reverifyBlobs(ctx: PullContext, files: StoredFile[]): Promise<number> {
  let bad = 0;
  for (const file of files) {
    if (!(await ctx.store.blobs.has(file.digest, file.size))) continue;
    ctx.options.onProgress?.({ type: "verifying", digest: file.digest, size: file.size });
    const actual = await digestFile(ctx.store.blobs.path(file.digest), file.digest, ctx.options.signal);
    if (actual !== file.digest) {
      bad++;
      ctx.logger.warn(`cached ${file.filename} is corrupt (digest ${actual}); it will be downloaded again`);
      await ctx.store.blobs.remove(file.digest);
    }
  }
  return bad;
}
