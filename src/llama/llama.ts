/**
 * The `llama` namespace: the entry points of the inference API.
 *
 *   const model = await llama.fromDocker("ai/smollm2:135M-Q4_0");
 *   console.log(await model.complete("Once upon a time", { maxTokens: 32 }));
 */
import { readFile, stat } from "node:fs/promises";
import { LlamaOciError } from "../errors.js";
import { pull, type PullOptions } from "../oci/pull.js";
import { getBinding, loadedBinding } from "./binding.js";
import { setLlamaLogger, type LlamaLogger, type LlamaLogLevel } from "./logger.js";
import { readChatFileFor, type ChatSession, type ChatSessionOptions } from "./chat.js";
import { loadModel, type LlamaModel } from "./model.js";
import type { NativeSystemInfo } from "./native-types.js";
import type { ModelOptions } from "./options.js";
import type { LlamaServer, ServeOptions } from "../server/index.js";

/** pull() options (onProgress, cacheDir, credentials, ...) together with the model's load and context options. */
export interface FromDockerOptions extends PullOptions, ModelOptions {
  /** Aborts the pull and the load. */
  signal?: AbortSignal;
}

/** Chat templates are a few KiB; one larger than this is not a template. */
const MAX_TEMPLATE_BYTES = 1024 * 1024;

/** The artifact's chat template (its text); an empty file is no template. */
async function readArtifactTemplate(path: string): Promise<string | undefined> {
  try {
    if ((await stat(path)).size > MAX_TEMPLATE_BYTES) {
      throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `the artifact's chat template ${path} is larger than ${MAX_TEMPLATE_BYTES} bytes`);
    }
    const text = await readFile(path, "utf8");
    return text.trim() === "" ? undefined : text;
  } catch (error) {
    if (error instanceof LlamaOciError) throw error;
    throw new LlamaOciError("MODEL_LOAD", `cannot read the artifact's chat template ${path}: ${(error as Error).message}`, { cause: error });
  }
}

export const llama = {
  /** Opens a local GGUF file. */
  loadModel(path: string, options: ModelOptions = {}): Promise<LlamaModel> {
    return loadModel(path, options);
  },

  /** Pulls `reference` from its OCI registry (or the cache) with pull(), then loads it; the pull is `model.pull`. */
  async fromDocker(reference: string, options: FromDockerOptions = {}): Promise<LlamaModel> {
    const pulled = await pull(reference, options);
    const defaults = pulled.defaults ?? {};
    // The artifact's chat template layer wins over the template embedded in the GGUF.
    const chatTemplate = pulled.chatTemplatePath === undefined ? undefined : await readArtifactTemplate(pulled.chatTemplatePath);
    // The artifact's own context size (Ollama's num_ctx) when the caller does not choose one.
    // The artifact's projector (mmproj layer), so that chats take images, unless the caller gives one.
    const projector = options.projector ?? pulled.mmprojPath;
    const model = await loadModel(pulled.path, { ...options, contextSize: options.contextSize ?? defaults.contextSize, ...(projector ? { projector } : {}) });
    model.pull = pulled;
    const { contextSize: _contextSize, ...generation } = defaults;
    model.generationDefaults = generation;
    if (pulled.systemPrompt !== undefined) model.systemPrompt = pulled.systemPrompt;
    if (chatTemplate !== undefined) {
      model.chatTemplate = chatTemplate;
      model.chatTemplateName = `the artifact's chat template (${pulled.chatTemplatePath ?? "?"})`;
    }
    return model;
  },

  /**
   * Continues a conversation saved with chat.save(path): the session has the saved history and settings, and its
   * sequence of the KV cache is restored, so the next turn evaluates only the new message (its timings'
   * cachedTokens show it). `options` are the new session's, as for model.createChat() (the saved system prompt,
   * template and history are used). Rejects with code CHAT_FILE for a file saved with another model, or one that is
   * truncated, corrupt or of another format version.
   */
  async restoreChat(model: LlamaModel, path: string, options: ChatSessionOptions = {}): Promise<ChatSession<LlamaModel>> {
    const file = await readChatFileFor(model, path);
    const { header } = file;
    const [first, ...rest] = header.history;
    const system = first?.role === "system" && typeof first.content === "string" ? first.content : undefined;
    // A context of its own at least as large as the one the state came from (a shared parallel one is what it is).
    const ownSize = model.contextOptions.parallel === 1 && options.context === undefined && options.contextSize === undefined && header.contextSize > model.contextOptions.contextSize;
    const chat = model.createChat({
      ...(header.contextShift === undefined ? {} : { contextShift: header.contextShift }),
      ...(ownSize ? { contextSize: header.contextSize } : {}),
      ...options,
      systemPrompt: system,
      chatTemplate: options.chatTemplate ?? header.chatTemplate,
      history: system === undefined ? header.history : rest,
    });
    try {
      await chat.restoreFrom(file);
    } catch (error) {
      await chat.dispose();
      throw error;
    }
    return chat;
  },

  /** Starts `llama-oci serve` in this process (see ServeOptions); the server code loads on this first call. */
  async serve(options: ServeOptions = {}): Promise<LlamaServer> {
    return (await import("../server/index.js")).serve(options);
  },

  /** Backends, devices and CPU features of the loaded addon (loads it if needed). */
  systemInfo(): NativeSystemInfo {
    return getBinding().systemInfo();
  },

  /**
   * Sends llama.cpp's log to `logger` (null = silent, the default); messages below `level` (default "warn") are
   * dropped before they reach JavaScript.
   */
  setLogger(logger: LlamaLogger | null, level: LlamaLogLevel = "warn"): void {
    setLlamaLogger(logger, level, loadedBinding());
  },
};
