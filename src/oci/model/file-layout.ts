/**
 * The model's file layout: which layers of an artifact llama.cpp uses (weights in shard order, projector, chat
 * template, licenses), the artifact format, and the safe names the files get in the model folder.
 */
import { LlamaOciError } from "../../errors.js";
import type { Descriptor, ImageManifest } from "./manifest.js";
import {
  ANNOTATION_FILEPATH,
  ANNOTATION_TITLE,
  CNCF_DOC_RAW,
  CNCF_MODEL_CONFIG,
  CNCF_MODEL_MANIFEST,
  CNCF_WEIGHT_GGUF,
  CNCF_WEIGHT_CONFIG_RAW,
  CNCF_WEIGHT_RAW,
  DOCKER_CHAT_TEMPLATE,
  DOCKER_LICENSE,
  DOCKER_MODEL_CONFIG_PRE_RELEASE,
  DOCKER_MODEL_CONFIG_V01,
  DOCKER_MODEL_CONFIG_V02,
  MMPROJ_TYPES,
  OLLAMA_LICENSE,
  OLLAMA_MODEL,
  OLLAMA_PARAMS,
  OLLAMA_PREFIX,
  OLLAMA_PROJECTOR,
  OLLAMA_SYSTEM,
  OLLAMA_TEMPLATE,
} from "./media-types.js";

/**
 * What a file of the model is: the weights (every shard), the multimodal projector, a Jinja chat template, a
 * license, or Ollama's generation defaults (JSON), default system prompt (text) and Go chat template.
 */
export type ModelFileKind = "gguf" | "mmproj" | "chat-template" | "license" | "params" | "system-prompt" | "go-template";

export interface ModelFile {
  kind: ModelFileKind;
  descriptor: Descriptor;
  /** Safe relative path inside the model folder, with '/' separators. */
  filename: string;
  /** Set for a GGUF split into several files; index counts from 1. */
  shard?: { index: number; count: number };
}

export type ArtifactFormat = "docker-v0.1" | "docker-v0.2" | "cncf-modelpack" | "docker-pre-release" | "ollama" | "generic-gguf";

/** llama.cpp's split naming, `%s-%05d-of-%05d.gguf`: it finds shard 2..N by rebuilding this name from shard 1's. */
const SHARD_NAME = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/;

export function artifactFormat(manifest: ImageManifest): ArtifactFormat {
  const configType = manifest.config.mediaType.toLowerCase();
  if (configType === DOCKER_MODEL_CONFIG_V01) return "docker-v0.1";
  if (configType === DOCKER_MODEL_CONFIG_V02) return "docker-v0.2";
  if (manifest.artifactType === CNCF_MODEL_MANIFEST || configType === CNCF_MODEL_CONFIG) return "cncf-modelpack";
  if (configType === DOCKER_MODEL_CONFIG_PRE_RELEASE) return "docker-pre-release";
  if (manifest.layers.some((layer) => layer.mediaType.toLowerCase().startsWith(OLLAMA_PREFIX))) return "ollama";
  return "generic-gguf";
}

interface Candidate {
  kind: ModelFileKind;
  descriptor: Descriptor;
  layer: number;
  /** The annotated path, already checked by safeRelativePath. */
  path?: string;
}

/**
 * The files of a model artifact that llama.cpp uses, with the names they must have on disk: GGUF weights first, in
 * shard order, then the projector, chat template and licenses in layer order. Other layers (safetensors, tokenizer
 * files, tar archives) are left out.
 */
export function modelFiles(manifest: ImageManifest): { format: ArtifactFormat; files: ModelFile[] } {
  const format = artifactFormat(manifest);
  const candidates: Candidate[] = [];
  manifest.layers.forEach((descriptor, layer) => {
    const path = annotatedPath(descriptor, layer);
    const kind = classifyLayer(descriptor.mediaType.toLowerCase(), path);
    if (kind !== undefined) candidates.push(path === undefined ? { kind, descriptor, layer } : { kind, descriptor, layer, path });
  });

  const weights = candidates.filter((candidate) => candidate.kind === "gguf");
  if (weights.length === 0) {
    const types = [...new Set(manifest.layers.map((layer) => layer.mediaType))];
    throw new LlamaOciError(
      "UNSUPPORTED_ARTIFACT",
      `no GGUF layer in the manifest (config ${manifest.config.mediaType}; layers: ${types.length > 0 ? types.join(", ") : "none"})`,
      {
        hint: "llama-oci pulls GGUF models: choose a tag of this model that holds GGUF weights (safetensors, DDUF and tar-packed weights are not supported).",
      },
    );
  }

  const named = [...nameWeights(weights), ...nameOthers(candidates.filter((candidate) => candidate.kind !== "gguf"))];
  checkNoCollisions(named);
  return { format, files: named.map(({ file }) => file) };
}

function classifyLayer(type: string, path: string | undefined): ModelFileKind | undefined {
  const base = path === undefined ? undefined : basename(path).toLowerCase();
  const ollama = OLLAMA_KINDS.get(type);
  if (ollama !== undefined) return ollama;
  if (MMPROJ_TYPES.includes(type)) return "mmproj";
  if (type === DOCKER_CHAT_TEMPLATE) return "chat-template";
  if (type === DOCKER_LICENSE) return "license";
  if (type === CNCF_DOC_RAW) return base !== undefined && /^licen[cs]e/.test(base) ? "license" : undefined;
  // Docker Model Runner writes a ModelPack chat template as a weight config file; only its name says what it is.
  if (type === CNCF_WEIGHT_CONFIG_RAW) return base?.endsWith(".jinja") ? "chat-template" : undefined;
  // In ModelPack the projector is just another weight file, told apart only by its name.
  const projectorByName = base?.includes("mmproj") ? "mmproj" : "gguf";
  if (type === CNCF_WEIGHT_RAW) return base?.endsWith(".gguf") ? projectorByName : undefined;
  if (type === CNCF_WEIGHT_GGUF) return projectorByName;
  if (type.includes("gguf")) {
    if (type.includes("mmproj")) return "mmproj";
    // A LoRA adapter is a GGUF too, but loading it as a weight shard would break the model.
    if (type.includes("lora")) return undefined;
    return type.startsWith("application/vnd.docker.ai.") ? "gguf" : projectorByName;
  }
  return undefined;
}

/** Ollama's layers that llama-oci uses; adapters (LoRA) and message history are left out. */
const OLLAMA_KINDS: ReadonlyMap<string, ModelFileKind> = new Map([
  [OLLAMA_MODEL, "gguf"],
  [OLLAMA_PROJECTOR, "mmproj"],
  [OLLAMA_LICENSE, "license"],
  [OLLAMA_PARAMS, "params"],
  [OLLAMA_SYSTEM, "system-prompt"],
  [OLLAMA_TEMPLATE, "go-template"],
]);

/** The file names the other kinds get when the artifact does not name them. */
const DEFAULT_NAMES: Readonly<Record<Exclude<ModelFileKind, "gguf" | "license">, string>> = {
  mmproj: "mmproj-model.gguf",
  "chat-template": "template.jinja",
  params: "params.json",
  "system-prompt": "system.txt",
  "go-template": "template.gotmpl",
};

function annotatedPath(descriptor: Descriptor, layer: number): string | undefined {
  const annotations = descriptor.annotations ?? {};
  const raw = nonEmpty(annotations[ANNOTATION_FILEPATH]) ?? nonEmpty(annotations[ANNOTATION_TITLE]);
  if (raw === undefined) return undefined;
  const checked = checkRelativePath(raw);
  if ("reason" in checked) {
    throw new LlamaOciError(
      "UNSUPPORTED_ARTIFACT",
      `${layerName(descriptor, layer)} has an unsafe file path ${JSON.stringify(raw)}: ${checked.reason}`,
      { hint: "The artifact is malformed or hostile; llama-oci refuses to write outside the model folder." },
    );
  }
  return checked.path;
}

interface Named {
  file: ModelFile;
  layer: number;
}

function nameWeights(weights: Candidate[]): Named[] {
  const count = weights.length;
  if (count === 1) {
    const [only] = weights as [Candidate];
    return [{ file: { kind: "gguf", descriptor: only.descriptor, filename: only.path ?? "model.gguf" }, layer: only.layer }];
  }

  // Annotated names that already follow llama.cpp's split pattern are kept, ordered by their numbers.
  const parsed = weights.map((weight) => {
    const match = weight.path === undefined ? null : SHARD_NAME.exec(basename(weight.path));
    return match ? { weight, prefix: match[1]!, index: Number(match[2]), of: Number(match[3]) } : undefined;
  });
  const complete = parsed.every((entry) => entry !== undefined && entry.of === count && entry.prefix === parsed[0]!.prefix);
  const indexes = new Set(parsed.map((entry) => entry?.index));
  if (complete && indexes.size === count && [...indexes].every((index) => index !== undefined && index >= 1 && index <= count)) {
    const ordered = parsed.map((entry) => entry!).sort((a, b) => a.index - b.index);
    const dir = dirname(ordered[0]!.weight.path!);
    return ordered.map(({ weight, index }) => ({
      file: { kind: "gguf", descriptor: weight.descriptor, filename: dir + basename(weight.path!), shard: { index, count } },
      layer: weight.layer,
    }));
  }

  // Otherwise layer order is shard order, and every shard is named after the first one, in the first one's folder.
  const first = weights[0]!;
  const dir = first.path === undefined ? "" : dirname(first.path);
  const stem =
    (first.path === undefined ? "model" : basename(first.path))
      .replace(/\.gguf$/i, "")
      .replace(/-\d{5}-of-\d{5}$/, "") || "model";
  return weights.map((weight, i) => ({
    file: {
      kind: "gguf",
      descriptor: weight.descriptor,
      filename: `${dir}${stem}-${pad5(i + 1)}-of-${pad5(count)}.gguf`,
      shard: { index: i + 1, count },
    },
    layer: weight.layer,
  }));
}

function nameOthers(others: Candidate[]): Named[] {
  let unnamedLicenses = 0;
  return others.map((other) => {
    let filename = other.path;
    if (filename === undefined) {
      filename = other.kind === "license" ? (++unnamedLicenses === 1 ? "LICENSE" : `LICENSE-${unnamedLicenses}`) : DEFAULT_NAMES[other.kind as keyof typeof DEFAULT_NAMES];
    }
    return { file: { kind: other.kind, descriptor: other.descriptor, filename }, layer: other.layer };
  });
}

/** Two layers must never land on one file; compared case-insensitively because macOS and Windows folders are. */
function checkNoCollisions(named: Named[]): void {
  const owners = new Map<string, Named>();
  const folders = new Map<string, Named>();
  const describe = ({ file, layer }: Named) => layerName(file.descriptor, layer);
  for (const entry of named) {
    const { file } = entry;
    const key = file.filename.toLowerCase();
    const clash = owners.get(key) ?? folders.get(key);
    if (clash) {
      throw new LlamaOciError(
        "UNSUPPORTED_ARTIFACT",
        `${describe(clash)} and ${describe(entry)} would both be written to ${JSON.stringify(file.filename)}`,
        { hint: "The artifact names two files the same; ask its publisher to fix it." },
      );
    }
    owners.set(key, entry);
    const segments = key.split("/");
    for (let i = 1; i < segments.length; i++) {
      const folder = segments.slice(0, i).join("/");
      const fileThere = owners.get(folder);
      if (fileThere) {
        throw new LlamaOciError(
          "UNSUPPORTED_ARTIFACT",
          `${describe(entry)} needs a folder ${JSON.stringify(folder)} where ${describe(fileThere)} puts a file`,
        );
      }
      folders.set(folder, entry);
    }
  }
}

/**
 * A file path from an artifact, made safe to join to the model folder: relative, '/'-separated, no '..', no empty
 * segments, nothing Windows would read as a drive, stream or separator. "./" segments are dropped.
 */
export function safeRelativePath(path: string): string {
  const checked = checkRelativePath(path);
  if ("reason" in checked) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `unsafe file path ${JSON.stringify(path)}: ${checked.reason}`);
  }
  return checked.path;
}

function checkRelativePath(path: string): { path: string } | { reason: string } {
  if (typeof path !== "string" || path === "") return { reason: "it is empty" };
  if (/[\u0000-\u001f\u007f]/.test(path)) return { reason: "it contains control characters" };
  if (path.includes("\\")) return { reason: "it contains a backslash" };
  if (/^[A-Za-z]:/.test(path)) return { reason: "it names a drive" };
  if (path.includes(":")) return { reason: "it contains ':'" };
  if (path.startsWith("/")) return { reason: "it is an absolute path" };
  const segments: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "") return { reason: "it has an empty path segment" };
    if (segment === "..") return { reason: "it leaves the model folder" };
    if (segment !== ".") segments.push(segment);
  }
  if (segments.length === 0) return { reason: "it names no file" };
  return { path: segments.join("/") };
}

/** "layer 3 (sha256:0123456789ab…, <media type>)": what a user can match against `crane manifest` output. */
function layerName(descriptor: Descriptor, layer: number): string {
  const short = descriptor.digest.slice(0, descriptor.digest.indexOf(":") + 13);
  return `layer ${layer + 1} (${short}…, ${descriptor.mediaType})`;
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The folder part including its trailing '/', or "" at the top. */
function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/") + 1);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function pad5(n: number): string {
  return String(n).padStart(5, "0");
}
