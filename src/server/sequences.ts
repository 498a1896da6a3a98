/**
 * What one sequence of a model is. Today: a pool of up to `parallel` separate LlamaContexts of the model, created
 * when first needed, each holding the tokens of its last request (prompt and output) in its KV cache. A request
 * goes to the idle context whose cached tokens share the longest prefix with its prompt, so the next turn of a
 * chat re-evaluates only the new tokens.
 *
 * This is the one file to replace when the model can run `parallel` sequences in one context (one batched decode
 * loop with per-sequence prefix reuse): createSequenceBackend() then returns
 *   const context = model.createContext({ ...options.context, parallel: options.parallel });
 *   { contextSize, run: (tokens, generation) => context.completeWithMeta(tokens, generation), dispose: () => context.dispose() }
 * The runner in front of it never hands it more than `parallel` requests at once.
 */
import type { CompletionResult } from "../llama/completion.js";
import type { LlamaContext } from "../llama/context.js";
import type { LlamaModel } from "../llama/model.js";
import type { ContextOptions, GenerationOptions } from "../llama/options.js";

export interface SequenceBackend {
  /** Tokens one sequence holds. */
  readonly contextSize: number;
  /** Called with at most `parallel` requests at once. */
  run(tokens: Int32Array, generation: GenerationOptions): Promise<CompletionResult>;
  dispose(): Promise<void>;
}

export interface SequenceBackendOptions {
  parallel: number;
  context: ContextOptions;
}

export function createSequenceBackend(model: LlamaModel, options: SequenceBackendOptions): SequenceBackend {
  return new ContextPool(model, options);
}

interface Slot {
  context: Promise<LlamaContext<LlamaModel>>;
  /** What the context's KV cache holds, as far as this pool knows: the last prompt and the tokens generated after it. */
  cached: Int32Array;
  busy: boolean;
  lastUsed: number;
}

const EMPTY = new Int32Array(0);

class ContextPool implements SequenceBackend {
  readonly contextSize: number;
  #model: LlamaModel;
  #options: SequenceBackendOptions;
  #slots: Slot[] = [];
  #disposing: Promise<void> | undefined;

  constructor(model: LlamaModel, options: SequenceBackendOptions) {
    this.#model = model;
    this.#options = options;
    this.contextSize = options.context.contextSize ?? model.contextOptions.contextSize;
  }

  async run(tokens: Int32Array, generation: GenerationOptions): Promise<CompletionResult> {
    if (this.#disposing) throw new Error("the model is being unloaded");
    const slot = this.#pick(tokens);
    slot.busy = true;
    try {
      const context = await slot.context;
      // Until the request ends, the cache holds an unknown mix of the old and the new tokens.
      slot.cached = EMPTY;
      const result = await context.completeWithMeta(tokens, generation);
      slot.cached = concat(tokens, result.tokens);
      return result;
    } finally {
      slot.busy = false;
      slot.lastUsed = performance.now();
    }
  }

  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      const contexts = await Promise.allSettled(this.#slots.map((slot) => slot.context));
      await Promise.all(contexts.flatMap((c) => (c.status === "fulfilled" ? [c.value.dispose()] : [])));
      this.#slots = [];
    })();
    return this.#disposing;
  }

  /**
   * The idle slot for `tokens`: one whose whole cache is a prefix of the prompt (a continuation: nothing is lost by
   * reusing it), else a new context while the pool has room (so other conversations keep their caches), else the
   * idle one sharing the longest prefix, the least recently used among equals.
   */
  #pick(tokens: Int32Array): Slot {
    let continuation: Slot | undefined;
    let best: Slot | undefined;
    let bestShared = -1;
    for (const slot of this.#slots) {
      if (slot.busy) continue;
      const shared = sharedPrefix(slot.cached, tokens);
      if (shared === slot.cached.length && (continuation === undefined || shared > continuation.cached.length)) continuation = slot;
      if (shared > bestShared || (shared === bestShared && best !== undefined && slot.lastUsed < best.lastUsed)) {
        best = slot;
        bestShared = shared;
      }
    }
    if (continuation) return continuation;
    if (this.#slots.length < this.#options.parallel) return this.#newSlot();
    if (!best) throw new Error(`all ${this.#options.parallel} sequences are busy`);
    return best;
  }

  #newSlot(): Slot {
    const context = this.#model.createContext(this.#options.context);
    const slot: Slot = { context, cached: EMPTY, busy: false, lastUsed: 0 };
    // A context that could not be created is forgotten, so the next request tries again.
    context.catch(() => {
      this.#slots = this.#slots.filter((s) => s !== slot);
    });
    this.#slots.push(slot);
    return slot;
  }
}

function sharedPrefix(a: Int32Array, b: Int32Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
