/**
 * packageModel(): builds a model artifact from local files, as `docker model package` does, and stores it in the
 * cache under a reference (so pull --offline, ls and run find it), then pushes it when asked. Docker's v0.1 layout:
 * one application/vnd.docker.ai.gguf.v3 layer per shard in shard order, then projector, chat template and
 * licenses, each annotated with its file name. CNCF ModelPack: weight.v1.raw for GGUF files (projector included,
 * told apart by "mmproj" in its name), weight.config.v1.raw for the template, doc.v1.raw for licenses.
 */
import { stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { LlamaOciError } from "../errors.js";
import { readGgufHeader } from "../gguf/reader.js";
import {
  artifactFormat,
  dockerModelConfig,
  modelFiles,
  modelPackConfig,
  parseManifest,
  readModelFacts,
  type ArtifactFormat,
  type Descriptor,
  ANNOTATION_FILE_METADATA,
  ANNOTATION_FILEPATH,
  CNCF_DOC_RAW,
  CNCF_MODEL_CONFIG,
  CNCF_MODEL_MANIFEST,
  CNCF_WEIGHT_CONFIG_RAW,
  CNCF_WEIGHT_RAW,
  DOCKER_CHAT_TEMPLATE,
  DOCKER_GGUF,
  DOCKER_LICENSE,
  DOCKER_MMPROJ,
  DOCKER_MODEL_CONFIG_V01,
  OCI_MANIFEST,
} from "./model/index.js";
import { formatReference, parseReference, sha256Digest } from "./name/index.js";
import type { PulledFile } from "./pull.js";
import { pushModel, type PushOptions, type PushResult } from "./push.js";
import { defaultCacheDir, importBufferBlob, importFileBlob, Store, type ImportedBlob, type StoredFile } from "./store/index.js";

export const ANNOTATION_MEDIATYPE_UNTESTED = "org.cncf.model.file.mediatype.untested";

export type PackageFormat = "docker" | "cncf";

export interface PackageOptions extends PushOptions {
  /** Where the model goes: [registry/]repository[:tag]. */
  reference: string;
  /** The GGUF file, or the first shard (<name>-00001-of-0000N.gguf) of a split model. */
  gguf: string;
  /** Multimodal projector (GGUF). */
  mmproj?: string;
  /** Chat template (Jinja). */
  chatTemplate?: string;
  licenses?: string[];
  /** Context size recorded in the config (Docker format only); default: the GGUF's own context length. */
  contextSize?: number;
  /** Default "docker" (v0.1 layout). */
  format?: PackageFormat;
  /** Also upload the artifact to the reference's registry. */
  push?: boolean;
  /** Creation time in the config; default SOURCE_DATE_EPOCH when set, else now. */
  created?: Date;
  /** Hard-link the files into the cache instead of copying them (only safe if the files are never modified). */
  hardLink?: boolean;
  /** Called as each file has been hashed into the cache. */
  onFileAdded?: (file: PackagedFile) => void;
}

export interface PackagedFile {
  kind: LayerKind;
  /** Name in the artifact (its filepath annotation). */
  filename: string;
  source: string;
  digest: string;
  size: number;
}

export interface PackageResult {
  reference: string;
  /** Digest of the manifest: the model's ID. */
  digest: string;
  configDigest: string;
  format: ArtifactFormat;
  /** Bytes of all model files. */
  size: number;
  /** The GGUF file to load from the cache (the first shard of a split model). */
  path: string;
  modelDir: string;
  files: PulledFile[];
  /** Present when options.push was set. */
  pushed?: PushResult;
}

type LayerKind = "gguf" | "mmproj" | "chat-template" | "license";

interface Input {
  kind: LayerKind;
  source: string;
  filename: string;
}

const SHARD_NAME = /^(.*)-(\d{5})-of-(\d{5})(\.gguf)$/i;
const MAX_CONTEXT_SIZE = 2 ** 31 - 1;

export async function packageModel(options: PackageOptions): Promise<PackageResult> {
  const env = options.env ?? process.env;
  const ref = parseReference(options.reference);
  if (ref.digest !== undefined || ref.tag === undefined) {
    throw new LlamaOciError("INVALID_ARGUMENT", `cannot package to ${options.reference}: a digest is computed from the artifact, give a tag`, {
      hint: "use [registry/]repository[:tag], e.g. registry.example.com/team/model:Q4_0",
    });
  }
  const canonical = formatReference(ref);
  const format = options.format ?? "docker";
  if (format !== "docker" && format !== "cncf") {
    throw new LlamaOciError("INVALID_ARGUMENT", `unknown format ${JSON.stringify(format)}; use "docker" or "cncf"`);
  }
  if (options.contextSize !== undefined) {
    if (!Number.isInteger(options.contextSize) || options.contextSize < 1 || options.contextSize > MAX_CONTEXT_SIZE) {
      throw new LlamaOciError("INVALID_ARGUMENT", `context size must be a positive integer up to ${MAX_CONTEXT_SIZE} (got ${options.contextSize})`);
    }
    if (format === "cncf") {
      throw new LlamaOciError("INVALID_ARGUMENT", "the CNCF ModelPack format has no context size field", {
        hint: "leave out --context-size, or package with --format docker",
      });
    }
  }
  const created = options.created ?? sourceDateEpoch(env) ?? new Date();

  const shards = await findShards(resolve(options.gguf));
  const facts = await readModelFacts(shards);
  if (options.mmproj !== undefined) await readGgufHeader(resolve(options.mmproj), { maxArrayLength: 0 });
  const inputs = nameInputs(format, [
    ...shards.map((source): Omit<Input, "filename"> => ({ kind: "gguf", source })),
    ...(options.mmproj === undefined ? [] : [{ kind: "mmproj" as const, source: resolve(options.mmproj) }]),
    ...(options.chatTemplate === undefined ? [] : [{ kind: "chat-template" as const, source: resolve(options.chatTemplate) }]),
    ...(options.licenses ?? []).map((path) => ({ kind: "license" as const, source: resolve(path) })),
  ]);

  const store = new Store(options.cacheDir ?? defaultCacheDir(env));
  const layers: Descriptor[] = [];
  for (const input of inputs) {
    const blob = await importFileBlob(store, input.source, { hardLink: options.hardLink, signal: options.signal });
    layers.push(await layerDescriptor(format, input, blob));
    options.onFileAdded?.({ kind: input.kind, filename: input.filename, source: input.source, digest: blob.digest, size: blob.size });
  }

  const configInputs = {
    facts,
    diffIds: layers.map((layer) => layer.digest),
    created,
    contextSize: options.contextSize,
    hasProjector: options.mmproj !== undefined,
  };
  const configJson = format === "docker" ? dockerModelConfig(configInputs) : modelPackConfig(configInputs);
  const config = await importBufferBlob(store, Buffer.from(JSON.stringify(configJson)));
  const manifestJson: Record<string, unknown> = { schemaVersion: 2, mediaType: OCI_MANIFEST };
  if (format === "cncf") manifestJson.artifactType = CNCF_MODEL_MANIFEST;
  manifestJson.config = { mediaType: format === "docker" ? DOCKER_MODEL_CONFIG_V01 : CNCF_MODEL_CONFIG, digest: config.digest, size: config.size };
  manifestJson.layers = layers;
  const body = Buffer.from(JSON.stringify(manifestJson));
  const digest = sha256Digest(body);

  // Read back as pull reads it, so the cache holds exactly what a pull of the pushed artifact would produce.
  const parsed = parseManifest(body, OCI_MANIFEST);
  if (parsed.kind !== "manifest") throw new Error("packageModel built an index");
  const { files } = modelFiles(parsed.manifest);
  const stored: StoredFile[] = files.map((file) => ({
    kind: file.kind,
    mediaType: file.descriptor.mediaType,
    digest: file.descriptor.digest,
    size: file.descriptor.size,
    filename: file.filename,
  }));
  await store.manifests.write(digest, body);
  const modelDir = await store.models.link(digest, stored);
  await store.models.write({
    manifestDigest: digest,
    format: artifactFormat(parsed.manifest),
    configDigest: config.digest,
    files: stored,
    verifiedAt: new Date().toISOString(),
  });
  await store.refs.writeTag(ref.registry, ref.repository, ref.tag, {
    reference: canonical,
    digest,
    mediaType: OCI_MANIFEST,
    manifestDigest: digest,
    resolvedAt: new Date().toISOString(),
  });

  const pulledFiles: PulledFile[] = stored.map((file) => ({
    kind: file.kind as PulledFile["kind"],
    path: join(modelDir, ...file.filename.split("/")),
    filename: file.filename,
    digest: file.digest,
    size: file.size,
    mediaType: file.mediaType,
  }));
  const result: PackageResult = {
    reference: canonical,
    digest,
    configDigest: config.digest,
    format: artifactFormat(parsed.manifest),
    size: pulledFiles.reduce((sum, file) => sum + file.size, 0),
    path: pulledFiles.find((file) => file.kind === "gguf")!.path,
    modelDir,
    files: pulledFiles,
  };
  if (options.push) result.pushed = await pushModel(canonical, options);
  return result;
}

/** The file itself, or for <name>-00001-of-0000N.gguf all N shards in order (as llama.cpp's split naming has them). */
export async function findShards(first: string): Promise<string[]> {
  const info = await stat(first).catch(() => undefined);
  if (!info?.isFile()) {
    throw new LlamaOciError(info ? "INVALID_ARGUMENT" : "NOT_FOUND", `${first} ${info ? "is not a regular file" : "does not exist"}`, {
      hint: "--gguf takes a GGUF file, or the first shard (…-00001-of-0000N.gguf) of a split model",
    });
  }
  const match = SHARD_NAME.exec(basename(first));
  if (!match) return [first];
  const [, prefix, index, count, extension] = match as unknown as [string, string, string, string, string];
  if (Number(index) !== 1) {
    throw new LlamaOciError("INVALID_ARGUMENT", `${first} is shard ${Number(index)} of ${Number(count)}, not the first`, {
      hint: `pass the first shard, ${prefix}-00001-of-${count}${extension}; the others are found next to it`,
    });
  }
  const shards: string[] = [];
  for (let i = 1; i <= Number(count); i++) {
    const path = join(dirname(first), `${prefix}-${String(i).padStart(5, "0")}-of-${count}${extension}`);
    if (!(await stat(path).then((s) => s.isFile(), () => false))) {
      throw new LlamaOciError("NOT_FOUND", `shard ${i} of ${Number(count)} is missing: ${path} does not exist`, {
        hint: "all shards of a split model must sit side by side, named as llama.cpp's gguf-split names them",
      });
    }
    shards.push(path);
  }
  return shards;
}

/**
 * Each file's name in the artifact: its own base name, made distinct (case-insensitively), and for ModelPack
 * shaped so that readers tell the files apart by name: a projector's name holds "mmproj", a template ends in
 * .jinja, a license starts with LICENSE.
 */
function nameInputs(format: PackageFormat, inputs: Omit<Input, "filename">[]): Input[] {
  const taken = new Set<string>();
  return inputs.map((input) => {
    let name = basename(input.source);
    if (format === "cncf") {
      if (input.kind === "gguf" && name.toLowerCase().includes("mmproj")) {
        throw new LlamaOciError("INVALID_ARGUMENT", `the model file ${name} has "mmproj" in its name, which marks a projector in the CNCF format`, {
          hint: "rename the file, or package with --format docker",
        });
      }
      if (input.kind === "mmproj" && !name.toLowerCase().includes("mmproj")) name = `mmproj-${name}`;
      if (input.kind === "chat-template" && !name.toLowerCase().endsWith(".jinja")) name = `${name}.jinja`;
      if (input.kind === "license" && !/^licen[cs]e/i.test(name)) name = `LICENSE-${name}`;
    }
    const dot = name.lastIndexOf(".");
    const [stem, ext] = input.kind === "gguf" || dot <= 0 ? [name, ""] : [name.slice(0, dot), name.slice(dot)];
    let unique = name;
    for (let n = 2; taken.has(unique.toLowerCase()); n++) {
      if (input.kind === "gguf") throw new LlamaOciError("INVALID_ARGUMENT", `${input.source} is given twice`);
      unique = `${stem}-${n}${ext}`;
    }
    taken.add(unique.toLowerCase());
    return { ...input, filename: unique };
  });
}

const DOCKER_TYPES: Record<LayerKind, string> = {
  gguf: DOCKER_GGUF,
  mmproj: DOCKER_MMPROJ,
  "chat-template": DOCKER_CHAT_TEMPLATE,
  license: DOCKER_LICENSE,
};

const CNCF_TYPES: Record<LayerKind, string> = {
  gguf: CNCF_WEIGHT_RAW,
  mmproj: CNCF_WEIGHT_RAW,
  "chat-template": CNCF_WEIGHT_CONFIG_RAW,
  license: CNCF_DOC_RAW,
};

/**
 * A layer as Docker Model Runner writes it: the raw file, with its name and tar-style file metadata annotated
 * (owner 0:0, so that packaging does not publish local user ids).
 */
async function layerDescriptor(format: PackageFormat, input: Input, blob: ImportedBlob): Promise<Descriptor> {
  const info = await stat(input.source);
  const metadata = {
    name: input.filename,
    mode: info.mode & 0o777,
    uid: 0,
    gid: 0,
    size: blob.size,
    mtime: info.mtime.toISOString(),
    typeflag: 48, // tar.TypeReg, '0'
  };
  return {
    mediaType: (format === "docker" ? DOCKER_TYPES : CNCF_TYPES)[input.kind],
    digest: blob.digest,
    size: blob.size,
    annotations: {
      [ANNOTATION_FILEPATH]: input.filename,
      [ANNOTATION_FILE_METADATA]: JSON.stringify(metadata),
      [ANNOTATION_MEDIATYPE_UNTESTED]: "false",
    },
  };
}

/** SOURCE_DATE_EPOCH (reproducible builds): seconds since 1970 to use as the creation time. */
function sourceDateEpoch(env: NodeJS.ProcessEnv): Date | undefined {
  const value = env.SOURCE_DATE_EPOCH?.trim();
  if (!value || !/^\d+$/.test(value)) return undefined;
  return new Date(Number(value) * 1000);
}

