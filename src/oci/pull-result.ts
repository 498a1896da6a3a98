/**
 * What a pull gives back (PullResult) and how it is built from a model record in the cache, for every source (a
 * registry, an OCI layout directory): the files laid out for llama.cpp, and what the artifact ships beside the
 * weights (Ollama's generation defaults and system prompt).
 */
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { LlamaOciError } from "../errors.js";
import { readGgufHeader } from "../gguf/reader.js";
import type { Logger } from "../log.js";
import { parseOllamaParams, type ArtifactFormat, type ModelDefaults, type ModelFileKind } from "./model/index.js";
import type { ModelRecord } from "./store/index.js";

export interface PulledFile {
  kind: ModelFileKind;
  /** Absolute path of the file in its model folder. */
  path: string;
  /** File name relative to the model folder. */
  filename: string;
  digest: string;
  size: number;
  mediaType: string;
}

export interface PullResult {
  /** Absolute path of the GGUF file to load (the first shard of a sharded model). */
  path: string;
  /** Digest of the model manifest. */
  digest: string;
  /** Total bytes of all the model's files. */
  size: number;
  /** The canonical reference that was pulled, e.g. "docker.io/ai/smollm2:135M-Q4_0". */
  reference: string;
  /** True when no blob bytes had to be transferred. */
  fromCache: boolean;
  files: PulledFile[];
  /** The folder holding all files, laid out as llama.cpp expects. */
  modelDir: string;
  format: ArtifactFormat;
  /** Multimodal projector, when the artifact has one. */
  mmprojPath?: string;
  /** Chat template (Jinja), when the artifact has one. */
  chatTemplatePath?: string;
  /** Blob bytes transferred over the network by this pull. */
  bytesTransferred: number;
  /** The registry mirror (its URL) that served the manifest; absent when the registry itself or the cache did. */
  mirror?: string;
  /** Generation and context defaults the artifact ships (Ollama's params layer), in llama-oci's option names. */
  defaults?: ModelDefaults;
  /** The default system prompt the artifact ships (Ollama's system layer). */
  systemPrompt?: string;
  /** Ollama's Go chat template, kept as metadata: chats use the GGUF's (or the artifact's) Jinja template. */
  goTemplatePath?: string;
}

/** Params and system prompts are a few hundred bytes; a larger one is not read into memory. */
const MAX_SMALL_FILE_BYTES = 1024 * 1024;

/** What an artifact ships beside the weights (Ollama's params and system layers), read from the model folder. */
export async function withArtifactExtras(result: PullResult, logger: Logger): Promise<PullResult> {
  const file = (kind: PulledFile["kind"]) => result.files.find((f) => f.kind === kind);
  const small = async (path: string) => (await stat(path)).size <= MAX_SMALL_FILE_BYTES ? readFile(path, "utf8") : undefined;
  const params = file("params");
  if (params) {
    const defaults = parseOllamaParams((await small(params.path)) ?? "");
    if (defaults) result.defaults = defaults;
    else logger.warn(`${result.reference}: its params layer is not a JSON object of generation settings; ignoring it`);
  }
  const system = file("system-prompt");
  if (system) result.systemPrompt = await small(system.path);
  const goTemplate = file("go-template");
  if (goTemplate) {
    result.goTemplatePath = goTemplate.path;
    if (!result.chatTemplatePath && !(await hasJinjaTemplate(result.path))) {
      logger.warn(`${result.reference} has only a Go chat template (Ollama's), which llama.cpp cannot run; chats will use llama.cpp's built-in template for its architecture`);
    }
  }
  return result;
}

async function hasJinjaTemplate(ggufPath: string): Promise<boolean> {
  try {
    const header = await readGgufHeader(ggufPath, { maxArrayLength: 0 });
    return header.metadata.has("tokenizer.chat_template");
  } catch {
    return false;
  }
}

export function buildResult(canonical: string, record: ModelRecord, modelDir: string, fromCache: boolean, bytesTransferred: number): PullResult {
  const files: PulledFile[] = record.files.map((f) => ({
    kind: f.kind as ModelFileKind,
    path: join(modelDir, ...f.filename.split("/")),
    filename: f.filename,
    digest: f.digest,
    size: f.size,
    mediaType: f.mediaType,
  }));
  const first = files.find((f) => f.kind === "gguf");
  if (!first) throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `${canonical} has no GGUF file`);
  return {
    path: first.path,
    digest: record.manifestDigest,
    size: files.reduce((sum, f) => sum + f.size, 0),
    reference: canonical,
    fromCache,
    files,
    modelDir,
    format: record.format as ArtifactFormat,
    mmprojPath: files.find((f) => f.kind === "mmproj")?.path,
    chatTemplatePath: files.find((f) => f.kind === "chat-template")?.path,
    bytesTransferred,
  };
}
