/**
 * Builders for the model artifact formats found on registries (model-artifact-formats.md §1.1-1.4, §3): Docker
 * v0.1 (legacy, bare or annotated), Docker v0.2 (layer per file), CNCF ModelPack, and the pre-release Docker types.
 * Each returns what pushArtifact takes. Timestamps are fixed so the same inputs give the same digests.
 */
import { digestOf, type ArtifactSpec, type BlobSpec } from "./push.js";

export const MEDIA = {
  dockerConfigV01: "application/vnd.docker.ai.model.config.v0.1+json",
  dockerConfigV02: "application/vnd.docker.ai.model.config.v0.2+json",
  dockerGguf: "application/vnd.docker.ai.gguf.v3",
  dockerSafetensors: "application/vnd.docker.ai.safetensors",
  dockerMmproj: "application/vnd.docker.ai.mmproj",
  dockerChatTemplate: "application/vnd.docker.ai.chat.template.jinja",
  dockerLicense: "application/vnd.docker.ai.license",
  dockerFile: "application/vnd.docker.ai.model.file",
  modelPackArtifact: "application/vnd.cncf.model.manifest.v1+json",
  modelPackConfig: "application/vnd.cncf.model.config.v1+json",
  modelPackWeight: "application/vnd.cncf.model.weight.v1.raw",
  modelPackWeightConfig: "application/vnd.cncf.model.weight.config.v1.raw",
  modelPackDoc: "application/vnd.cncf.model.doc.v1.raw",
  modelPackLegacyGguf: "application/vnd.cncf.model.weight.v1.gguf",
  preReleaseConfig: "application/vnd.docker.ai.model.config.v1+json",
  preReleaseGguf: "application/vnd.docker.ai.model.file.v1+gguf",
} as const;

export const ANNOTATION_FILEPATH = "org.cncf.model.filepath";
export const ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json";
export const ANNOTATION_MEDIATYPE_UNTESTED = "org.cncf.model.file.mediatype.untested";

const CREATED = "2025-01-01T00:00:00Z";

/**
 * A fake GGUF: "GGUF", version 3, zero tensors and zero KV pairs (so a header parser accepts it), then bytes from a
 * xorshift32 stream seeded by `seed`. Different seeds give different digests. Fast enough for hundreds of MB.
 */
export function fakeGguf(size: number, seed: number): Buffer {
  if (!Number.isInteger(size) || size < 8) throw new Error("fakeGguf: size must be an integer >= 8");
  const words = new Uint32Array(Math.ceil(size / 4));
  let state = (Math.imul(seed | 0, 0x9e3779b1) ^ 0x85ebca6b) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    words[i] = state;
  }
  const buf = Buffer.from(words.buffer, 0, size);
  buf.write("GGUF", 0, "latin1");
  buf.writeUInt32LE(3, 4);
  if (size >= 24) {
    buf.writeBigUInt64LE(0n, 8);
    buf.writeBigUInt64LE(0n, 16);
  }
  return buf;
}

/** Positional names, as DMR's v0.1 unpacking uses: model.gguf, or model-00001-of-00003.gguf for shards. */
export function shardNames(count: number): string[] {
  if (count === 1) return ["model.gguf"];
  const pad = (n: number) => String(n).padStart(5, "0");
  return Array.from({ length: count }, (_, i) => `model-${pad(i + 1)}-of-${pad(count)}.gguf`);
}

export interface DockerV01Options {
  ggufs: Buffer[];
  mmproj?: Buffer;
  chatTemplate?: string;
  licenses?: string[];
  /** Add the filepath/metadata annotations newer DMR writes on every layer; default false = bare v0.1. */
  annotate?: boolean;
  /** File names used in annotations; default shardNames(). */
  ggufNames?: string[];
  contextSize?: number;
}

export function dockerV01(opts: DockerV01Options): ArtifactSpec {
  if (opts.ggufs.length === 0) throw new Error("dockerV01: at least one GGUF");
  const names = opts.ggufNames ?? shardNames(opts.ggufs.length);
  const files: { name: string; data: Buffer; mediaType: string }[] = opts.ggufs.map((data, i) => ({
    name: names[i]!,
    data,
    mediaType: MEDIA.dockerGguf,
  }));
  if (opts.mmproj) files.push({ name: "mmproj-model-f16.gguf", data: opts.mmproj, mediaType: MEDIA.dockerMmproj });
  if (opts.chatTemplate !== undefined) {
    files.push({ name: "template.jinja", data: Buffer.from(opts.chatTemplate), mediaType: MEDIA.dockerChatTemplate });
  }
  (opts.licenses ?? []).forEach((text, i) => {
    files.push({ name: i === 0 ? "LICENSE" : `LICENSE-${i + 1}`, data: Buffer.from(text), mediaType: MEDIA.dockerLicense });
  });
  const layers = files.map((file) => layer(file.mediaType, file.data, opts.annotate ? file.name : undefined));
  const weights = opts.ggufs.reduce((sum, data) => sum + data.length, 0);
  return { config: json(MEDIA.dockerConfigV01, dockerConfig(layers, weights, opts.contextSize)), layers };
}

export interface DockerV02Options {
  /** Relative paths; the media type is inferred from the name unless given. */
  files: { path: string; data: Buffer; mediaType?: string }[];
}

export function dockerV02(opts: DockerV02Options): ArtifactSpec {
  const layers = opts.files.map((file) => layer(file.mediaType ?? dockerMediaTypeFor(file.path), file.data, file.path));
  const weights = layers.filter((l) => l.mediaType === MEDIA.dockerGguf || l.mediaType === MEDIA.dockerSafetensors);
  const size = weights.reduce((sum, l) => sum + l.data.length, 0);
  const format = layers.some((l) => l.mediaType === MEDIA.dockerGguf) ? "gguf" : "safetensors";
  return { config: json(MEDIA.dockerConfigV02, dockerConfig(layers, size, undefined, format)), layers };
}

export interface ModelPackOptions {
  files: { path: string; data: Buffer }[];
  /** Use DMR's legacy application/vnd.cncf.model.weight.v1.gguf for .gguf files instead of weight.v1.raw. */
  legacyGgufType?: boolean;
}

export function modelPack(opts: ModelPackOptions): ArtifactSpec {
  const layers = opts.files.map((file) => layer(modelPackMediaTypeFor(file.path, opts.legacyGgufType ?? false), file.data, file.path));
  const config = {
    descriptor: { createdAt: CREATED, name: "test-model", family: "llama" },
    modelfs: { type: "layers", diffIds: layers.map((l) => digestOf(l.data)) },
    config: { architecture: "llama", format: "gguf", paramSize: "135M", quantization: "Q4_0" },
  };
  return { artifactType: MEDIA.modelPackArtifact, config: json(MEDIA.modelPackConfig, config), layers };
}

export function preRelease(opts: { gguf: Buffer }): ArtifactSpec {
  const layers = [layer(MEDIA.preReleaseGguf, opts.gguf, undefined)];
  const config = {
    config: { format: "gguf", quantization: "Unknown", parameters: "0", architecture: "llama", size: `${opts.gguf.length} B` },
    descriptor: { created: CREATED },
    rootfs: { type: "rootfs", diff_ids: [digestOf(opts.gguf)] },
  };
  return { config: json(MEDIA.preReleaseConfig, config), layers };
}

function dockerConfig(layers: BlobSpec[], weightBytes: number, contextSize?: number, format = "gguf"): object {
  const inner: Record<string, unknown> = {
    format,
    quantization: "Q4_0",
    parameters: "134.52M",
    architecture: "llama",
    size: humanSize(weightBytes),
    gguf: { "general.architecture": "llama", "llama.context_length": "8192" },
  };
  if (contextSize !== undefined) inner.context_size = contextSize;
  return {
    config: inner,
    descriptor: { created: CREATED },
    rootfs: { type: "rootfs", diff_ids: layers.map((l) => digestOf(l.data)) },
  };
}

function layer(mediaType: string, data: Buffer, filepath: string | undefined): BlobSpec {
  if (filepath === undefined) return { mediaType, data };
  const metadata = { name: filepath, mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: CREATED, typeflag: 48 };
  return {
    mediaType,
    data,
    annotations: {
      [ANNOTATION_FILEPATH]: filepath,
      [ANNOTATION_FILE_METADATA]: JSON.stringify(metadata),
      [ANNOTATION_MEDIATYPE_UNTESTED]: "false",
    },
  };
}

function json(mediaType: string, value: object): BlobSpec {
  return { mediaType, data: Buffer.from(JSON.stringify(value)) };
}

function dockerMediaTypeFor(path: string): string {
  const name = path.split("/").pop()!.toLowerCase();
  if (name.endsWith(".gguf")) return name.includes("mmproj") ? MEDIA.dockerMmproj : MEDIA.dockerGguf;
  if (name.endsWith(".safetensors")) return MEDIA.dockerSafetensors;
  if (name.endsWith(".jinja")) return MEDIA.dockerChatTemplate;
  if (name.startsWith("license")) return MEDIA.dockerLicense;
  return MEDIA.dockerFile;
}

function modelPackMediaTypeFor(path: string, legacyGgufType: boolean): string {
  const name = path.split("/").pop()!.toLowerCase();
  if (name.endsWith(".gguf")) return legacyGgufType ? MEDIA.modelPackLegacyGguf : MEDIA.modelPackWeight;
  if (name.startsWith("license") || name.startsWith("readme") || name.endsWith(".md")) return MEDIA.modelPackDoc;
  if (name.endsWith(".json") || name.endsWith(".jinja") || name.startsWith("tokenizer")) return MEDIA.modelPackWeightConfig;
  return MEDIA.modelPackWeight;
}

function humanSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes}B` : `${value.toFixed(2)}${units[unit]!}`;
}
