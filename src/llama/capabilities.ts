/**
 * What a loaded model can be asked to do, decided from its info before any native call: llama.cpp asserts (aborting
 * the process) when a non-causal model decodes more tokens than one micro-batch, and runs BERT-like models without a
 * KV cache, so generation on them is refused here with a clear error instead.
 */
import type { NativeModelInfo } from "./native-types.js";

/** Why the model cannot generate text, or undefined when it can. `hasMemory` is the context's (see NativeContext). */
export function generationProblem(info: NativeModelInfo, hasMemory = true): string | undefined {
  if (!info.causalAttention || !hasMemory) {
    const what = info.isDiffusion ? "a diffusion model" : "an embedding model";
    return `it is ${what} with non-causal attention${hasMemory ? "" : " and no KV cache"}; use embed() instead`;
  }
  if (info.hasEncoder) {
    return info.hasDecoder ? "encoder-decoder models (such as T5) are not supported" : "it is an encoder-only model; use embed() instead";
  }
  if (info.vocabType === "none") return 'it has no tokenizer (its GGUF says tokenizer.ggml.model "none")';
  return undefined;
}

/** Why the model cannot embed text, or undefined when it can. */
export function embeddingProblem(info: NativeModelInfo): string | undefined {
  if (info.hasEncoder && info.hasDecoder) return "embeddings of encoder-decoder models (such as T5) are not supported";
  return undefined;
}
