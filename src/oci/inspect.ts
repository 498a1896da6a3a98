/**
 * inspectModel(): what a model reference holds, without pulling it: the manifest, the config blob and the GGUF
 * header facts of the weights. A cached model is read from the cache with no network at all; otherwise (or with
 * `remote`) the manifest and config come from the registry and only the GGUF header bytes are fetched, with Range
 * requests. Nothing is written to the cache.
 */
import { readFile } from "node:fs/promises";
import { LlamaOciError } from "../errors.js";
import { createLogger, isTruthy, type Logger } from "../log.js";
import { ggufFacts, SHOWN_ARRAY_ITEMS, type GgufFacts } from "../gguf/facts.js";
import { readGgufHeader } from "../gguf/reader.js";
import type { GgufHeader } from "../gguf/types.js";
import { describeInput, entryReference, modelId, resolveLocal, type LocalTarget } from "./cache/index.js";
import {
  MAX_CONFIG_BYTES,
  modelFiles,
  parseManifest,
  parsePlatform,
  summarizeConfig,
  type ArtifactFormat,
  type ConfigSummary,
  type Descriptor,
  type ImageManifest,
  type ModelFile,
  type ModelFileKind,
} from "./model/index.js";
import { parseReference, formatReference, type Reference } from "./name/index.js";
import { connectRegistry, fetchBlobBytes, fetchModelManifest, readRemoteGgufHeader, type RegistryAccessOptions } from "./remote/index.js";
import { defaultCacheDir, Store } from "./store/index.js";
import { HttpClient } from "./transport/index.js";

export type { ConfigSummary } from "./model/index.js";

export interface InspectOptions extends RegistryAccessOptions {
  /** Ask the registry even when the model is cached. */
  remote?: boolean;
  /** Never use the network (also LLAMA_OCI_OFFLINE=1): a model that is not cached is an error. */
  offline?: boolean;
  /** Which child of an image index to inspect remotely, "os/arch[/variant]". */
  platform?: string;
}

export interface InspectLayer {
  mediaType: string;
  digest: string;
  size: number;
  /** What llama-oci does with the layer; absent for layers it does not use (safetensors, tokenizer files...). */
  kind?: ModelFileKind;
  /** The file name the layer gets in the model folder. */
  filename?: string;
  shard?: { index: number; count: number };
  annotations?: Record<string, string>;
}

export interface InspectConfig {
  mediaType: string;
  digest: string;
  size: number;
  /** The config blob as JSON; absent when it is not JSON. */
  content?: unknown;
  summary: ConfigSummary;
}

export interface InspectResult {
  /** Canonical reference, e.g. "docker.io/ai/smollm2:135M-Q4_0". */
  reference: string;
  /** The first 12 hex digits of the manifest digest, as `ls` shows. */
  id: string;
  /** Digest of the model manifest. */
  digest: string;
  /** When the reference named an image index: its digest (the model manifest was chosen from it). */
  indexDigest?: string;
  /** Where the facts came from. */
  source: "cache" | "registry";
  format: ArtifactFormat;
  manifest: {
    mediaType: string;
    artifactType?: string;
    annotations?: Record<string, string>;
    /** The manifest exactly as stored, parsed. */
    content: unknown;
  };
  layers: InspectLayer[];
  /** Bytes of all layers. */
  size: number;
  config: InspectConfig;
  /** Facts from the GGUF header of the weights (all shards). */
  gguf: GgufFacts;
  /** Blob bytes fetched from the registry: the config and the GGUF header ranges (0 from the cache). */
  bytesTransferred: number;
  /** When a cached model was last downloaded or verified. */
  pulledAt?: string;
}


interface InspectContext {
  ref: Reference;
  canonical: string;
  logger: Logger;
  options: InspectOptions;
}

/**
 * Inspects a model by reference, or a cached model by its ID (the 12 or more hex digits `ls` shows). The cache
 * answers when it holds the model, unless `remote` is set; the registry otherwise.
 */
export async function inspectModel(reference: string, options: InspectOptions = {}): Promise<InspectResult> {
  const env = options.env ?? process.env;
  const logger = createLogger({ verbose: options.verbose, onWarning: options.onWarning, onDebug: options.onDebug, env });
  const store = new Store(options.cacheDir ?? defaultCacheDir(env));
  const offline = options.offline ?? isTruthy(env.LLAMA_OCI_OFFLINE);
  if (!options.remote || offline) {
    const cached = await inspectCached(store, reference, logger);
    if (cached) return cached;
    if (offline) {
      throw new LlamaOciError("OFFLINE", `${describeInput(reference)} is not in the cache (${store.root}) and offline mode is on`, {
        hint: "pull it once while online, or turn off --offline / LLAMA_OCI_OFFLINE",
      });
    }
  }
  if (/^sha256:[0-9a-f]{12,64}$/.test(reference)) {
    // A model ID, not a repository named "sha256" on Docker Hub.
    throw new LlamaOciError("NOT_FOUND", `model ID ${reference} is not in the cache (${store.root})`, {
      hint: "run 'llama-oci ls' to see the cached models",
    });
  }
  const ref = parseReference(reference);
  const ctx: InspectContext = { ref, canonical: formatReference(ref), logger, options };
  if (!options.remote) logger.debug(`${ctx.canonical} is not cached; asking the registry`);
  const http = new HttpClient({ logger, env });
  try {
    return await inspectRemote(ctx, http);
  } finally {
    await http.close();
  }
}

/** The result from the cache alone, or undefined when the cache lacks the manifest, config or a GGUF file. */
async function inspectCached(store: Store, input: string, logger: Logger): Promise<InspectResult | undefined> {
  let target: LocalTarget;
  try {
    target = await resolveLocal(store, input);
  } catch (error) {
    if (error instanceof LlamaOciError && error.code === "NOT_FOUND") return undefined;
    throw error;
  }
  let manifestDigest: string;
  let indexDigest: string | undefined;
  let canonical: string;
  if (target.kind === "tag") {
    manifestDigest = target.entry.record.manifestDigest;
    if (target.entry.record.digest !== manifestDigest) indexDigest = target.entry.record.digest;
    canonical = formatReference(target.ref);
  } else if (target.kind === "digest") {
    manifestDigest = target.manifestDigest;
    if (target.ref.digest !== manifestDigest) indexDigest = target.ref.digest;
    canonical = formatReference(target.ref);
  } else {
    manifestDigest = target.manifestDigest;
    const named = target.entries.map(entryReference).find((ref) => ref !== undefined);
    canonical = named ? formatReference(named) : manifestDigest;
  }

  const [body, record] = await Promise.all([store.manifests.read(manifestDigest), store.models.read(manifestDigest)]);
  if (!body || !record) return undefined;
  const parsed = parseManifest(body, undefined);
  if (parsed.kind !== "manifest") return undefined;
  const manifest = parsed.manifest;
  const { format, files } = modelFiles(manifest);
  const weights = files.filter((file) => file.kind === "gguf");
  for (const file of [manifest.config, ...weights.map((w) => w.descriptor)]) {
    if (!(await store.blobs.has(file.digest, file.size))) return undefined;
  }

  const configBytes = await readFile(store.blobs.path(manifest.config.digest));
  const headers: GgufHeader[] = [];
  for (const weight of weights) {
    headers.push(await readGgufHeader(store.blobs.path(weight.descriptor.digest), { maxArrayLength: SHOWN_ARRAY_ITEMS }));
  }
  return buildResult(canonical, logger, {
    source: "cache",
    manifestDigest,
    indexDigest,
    mediaType: parsed.mediaType,
    body,
    manifest,
    format,
    files,
    configBytes,
    headers,
    bytesTransferred: 0,
    pulledAt: record.verifiedAt,
  });
}

async function inspectRemote(ctx: InspectContext, http: HttpClient): Promise<InspectResult> {
  const { ref, logger, options } = ctx;
  const env = options.env ?? process.env;
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

  const platform = options.platform !== undefined ? parsePlatform(options.platform) : undefined;
  const { model, manifest, indexDigest } = await fetchModelManifest(client, ref.repository, ref.digest ?? ref.tag!, ctx.canonical, options.signal, platform);
  if (indexDigest !== undefined) logger.debug(`index ${indexDigest}: using manifest ${model.digest}`);
  const { format, files } = modelFiles(manifest);

  const configBytes = await fetchBlobBytes(client, ref.repository, manifest.config, {
    what: `the config blob ${manifest.config.digest}`,
    maxBytes: MAX_CONFIG_BYTES,
    signal: options.signal,
  });
  let bytesTransferred = configBytes.length;
  const headers: GgufHeader[] = [];
  for (const weight of files.filter((file) => file.kind === "gguf")) {
    const header = await readRemoteGgufHeader({
      client,
      repository: ref.repository,
      digest: weight.descriptor.digest,
      size: weight.descriptor.size,
      logger,
      signal: options.signal,
      maxArrayLength: SHOWN_ARRAY_ITEMS,
    });
    bytesTransferred += header.bytesRead;
    headers.push(header);
  }
  return buildResult(ctx.canonical, logger, {
    source: "registry",
    manifestDigest: model.digest,
    indexDigest,
    mediaType: model.parsed.mediaType,
    body: model.body,
    manifest,
    format,
    files,
    configBytes,
    headers,
    bytesTransferred,
  });
}

interface Gathered {
  source: InspectResult["source"];
  manifestDigest: string;
  indexDigest?: string;
  mediaType: string;
  body: Buffer;
  manifest: ImageManifest;
  format: ArtifactFormat;
  files: ModelFile[];
  configBytes: Buffer;
  headers: GgufHeader[];
  bytesTransferred: number;
  pulledAt?: string;
}

function buildResult(canonical: string, logger: Logger, g: Gathered): InspectResult {
  const byDescriptor = new Map<Descriptor, ModelFile>(g.files.map((file) => [file.descriptor, file]));
  const layers = g.manifest.layers.map((descriptor): InspectLayer => {
    const file = byDescriptor.get(descriptor);
    const layer: InspectLayer = { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size };
    if (file) {
      layer.kind = file.kind;
      layer.filename = file.filename;
      if (file.shard) layer.shard = file.shard;
    }
    if (descriptor.annotations) layer.annotations = descriptor.annotations;
    return layer;
  });
  const content = parseJson(g.configBytes);
  if (content === undefined) logger.warn(`the config blob of ${canonical} is not JSON`);

  const result: InspectResult = {
    reference: canonical,
    id: modelId(g.manifestDigest),
    digest: g.manifestDigest,
    source: g.source,
    format: g.format,
    manifest: { mediaType: g.mediaType, content: parseJson(g.body) },
    layers,
    size: g.manifest.layers.reduce((sum, layer) => sum + layer.size, 0),
    config: {
      mediaType: g.manifest.config.mediaType,
      digest: g.manifest.config.digest,
      size: g.manifest.config.size,
      summary: summarizeConfig(content),
    },
    gguf: ggufFacts(g.headers),
    bytesTransferred: g.bytesTransferred,
  };
  if (g.indexDigest) result.indexDigest = g.indexDigest;
  if (g.manifest.artifactType) result.manifest.artifactType = g.manifest.artifactType;
  if (g.manifest.annotations) result.manifest.annotations = g.manifest.annotations;
  if (content !== undefined) result.config.content = content;
  if (g.pulledAt) result.pulledAt = g.pulledAt;
  return result;
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
}
