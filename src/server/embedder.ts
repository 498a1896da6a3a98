/**
 * Embeddings of one loaded model: a context created for embeddings (pooled output) when first needed, whose batch
 * and micro-batch are its whole size so one input is one pass, behind the same kind of bounded queue as generation.
 */
import type { LlamaContext } from "../llama/context.js";
import type { LlamaModel } from "../llama/model.js";
import type { ContextOptions } from "../llama/options.js";
import { Admission } from "./admission.js";

export class Embedder {
  /** The most tokens one input may have. */
  readonly limit: number;
  #model: LlamaModel;
  #contextOptions: ContextOptions;
  #context: Promise<LlamaContext<LlamaModel>> | undefined;
  #admission: Admission;

  constructor(model: LlamaModel, contextOptions: ContextOptions, maxQueue: number) {
    this.#model = model;
    this.#contextOptions = contextOptions;
    this.limit = contextOptions.contextSize ?? model.contextOptions.contextSize;
    this.#admission = new Admission(1, maxQueue);
  }

  get busy(): number {
    return this.#admission.running;
  }

  get queued(): number {
    return this.#admission.queued;
  }

  /**
   * Embeds each input in turn (one queue turn for the whole list). Throws QueueFullError synchronously when the
   * queue is full.
   */
  async embedAll(inputs: readonly Int32Array[], signal?: AbortSignal): Promise<Float32Array[]> {
    const release = await this.#admission.acquire(signal);
    try {
      const context = await this.#getContext();
      const vectors: Float32Array[] = [];
      for (const tokens of inputs) vectors.push(await context.embed(tokens, { signal }));
      return vectors;
    } finally {
      release();
    }
  }

  async dispose(): Promise<void> {
    this.#admission.cancelWaiting(new Error("the model was unloaded"));
    const context = await this.#context?.catch(() => undefined);
    await context?.dispose();
  }

  #getContext(): Promise<LlamaContext<LlamaModel>> {
    if (!this.#context) {
      const size = this.limit;
      const promise = this.#model.createContext({ ...this.#contextOptions, contextSize: size, batchSize: size, ubatchSize: size, embeddings: true });
      promise.catch(() => {
        if (this.#context === promise) this.#context = undefined;
      });
      this.#context = promise;
    }
    return this.#context;
  }
}
