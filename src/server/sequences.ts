/**
 * What the sequences of a model are: one context of the model with `parallel` sequences (llama/context.ts), whose
 * native loop batches every running request in one llama_decode per step and gives each request the idle sequence
 * whose cached tokens it continues, so the next turn of a chat re-evaluates only the new tokens. `--ctx-size` is
 * what one sequence holds, so the shared KV cache holds `parallel` times that.
 */
import type { CompletionResult } from "../llama/completion.js";
import type { LlamaContext } from "../llama/context.js";
import type { LlamaModel } from "../llama/model.js";
import type { ContextOptions, GenerationOptions } from "../llama/options.js";
import type { Prompt } from "./generation.js";

export interface SequenceBackend {
  /** Tokens one sequence holds. */
  readonly contextSize: number;
  /** Called with at most `parallel` requests at once; `arriving` (the request's announcement) ends once it was handed on. */
  run(tokens: Prompt, generation: GenerationOptions, arriving?: () => void): Promise<CompletionResult>;
  /** Announces a request on its way (LlamaContext.expectRequest); a no-op until the context exists. */
  expect(): () => void;
  dispose(): Promise<void>;
}

export interface SequenceBackendOptions {
  parallel: number;
  context: ContextOptions;
}

export function createSequenceBackend(model: LlamaModel, options: SequenceBackendOptions): SequenceBackend {
  return new BatchedContext(model, options);
}

class BatchedContext implements SequenceBackend {
  readonly contextSize: number;
  #model: LlamaModel;
  #options: SequenceBackendOptions;
  #context: Promise<LlamaContext<LlamaModel>> | undefined;
  #ready: LlamaContext<LlamaModel> | undefined;
  #disposing: Promise<void> | undefined;

  constructor(model: LlamaModel, options: SequenceBackendOptions) {
    this.#model = model;
    this.#options = options;
    this.contextSize = options.context.contextSize ?? model.contextOptions.contextSize;
  }

  async run(tokens: Prompt, generation: GenerationOptions, arriving?: () => void): Promise<CompletionResult> {
    if (this.#disposing) throw new Error("the model is being unloaded");
    const context = await this.#get();
    // completeWithMeta announces the request itself from its call on, so this announcement can end here.
    const result = context.completeWithMeta(tokens, generation);
    arriving?.();
    return result;
  }

  expect(): () => void {
    if (this.#disposing || !this.#ready) return () => {};
    return this.#ready.expectRequest();
  }

  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      const context = await this.#context?.catch(() => undefined);
      await context?.dispose();
    })();
    return this.#disposing;
  }

  /** The context, created on first use; one that could not be created is tried again by the next request. */
  #get(): Promise<LlamaContext<LlamaModel>> {
    if (!this.#context) {
      const { parallel } = this.#options;
      const promise = this.#model.createContext({ ...this.#options.context, contextSize: this.contextSize * parallel, parallel });
      promise.then(
        (context) => {
          if (this.#context === promise) this.#ready = context;
        },
        () => {
          if (this.#context === promise) this.#context = undefined;
        },
      );
      this.#context = promise;
    }
    return this.#context;
  }
}
