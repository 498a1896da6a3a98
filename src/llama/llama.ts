/**
 * The `llama` namespace: the entry points of the inference API.
 *
 *   const model = await llama.fromDocker("ai/smollm2:135M-Q4_0");
 *   console.log(await model.complete("Once upon a time", { maxTokens: 32 }));
 */
import { pull, type PullOptions } from "../oci/pull.js";
import { getBinding, loadedBinding } from "./binding.js";
import { setLlamaLogger, type LlamaLogger, type LlamaLogLevel } from "./logger.js";
import { loadModel, type LlamaModel } from "./model.js";
import type { NativeSystemInfo } from "./native-types.js";
import type { ModelOptions } from "./options.js";

/** pull() options (onProgress, cacheDir, credentials, ...) together with the model's load and context options. */
export interface FromDockerOptions extends PullOptions, ModelOptions {
  /** Aborts the pull and the load. */
  signal?: AbortSignal;
}

export const llama = {
  /** Opens a local GGUF file. */
  loadModel(path: string, options: ModelOptions = {}): Promise<LlamaModel> {
    return loadModel(path, options);
  },

  /** Pulls `reference` from its OCI registry (or the cache) with pull(), then loads it; the pull is `model.pull`. */
  async fromDocker(reference: string, options: FromDockerOptions = {}): Promise<LlamaModel> {
    const pulled = await pull(reference, options);
    const model = await loadModel(pulled.path, options);
    model.pull = pulled;
    return model;
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
