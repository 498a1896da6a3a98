/**
 * LlamaContext: one llama.cpp context (a KV cache) of a model. Requests on a context run one at a time in the order
 * they were made; the generation loop itself runs in native code on a worker thread, so the event loop stays free.
 * A new prompt that starts with tokens already in the KV cache reuses them instead of evaluating them again.
 *
 * A context created with `parallel: N` holds N sequences (one unified KV cache, or one each with kvUnified: false):
 * up to N requests generate at once, batched by one native decode loop (one llama_decode per step for all of them),
 * and later ones wait in call order for a free sequence. Each request goes to the idle sequence whose cache shares the longest prefix with its prompt.
 */
import { isAbort, LlamaOciError } from "../errors.js";
import { getBinding } from "./binding.js";
import { embeddingProblem, generationProblem } from "./capabilities.js";
import { createCompletionStream, toCompletionResult, type CompletionResult, type CompletionStream } from "./completion.js";
import { MediaPrompt } from "./media.js";
import type { ModelHandle } from "./model-handle.js";
import type { NativeBenchResult, NativeContext, NativeContextStats, NativeGenerateResult, NativeSequenceState } from "./native-types.js";
import { disposedError, nativeError } from "./native-errors.js";
import {
  checkLogitBias,
  invalid,
  resolveMaxTokens,
  toNativeSampling,
  type ContextOptions,
  type GenerationOptions,
} from "./options.js";
import { TaskQueue } from "./queue.js";

export interface EmbedOptions {
  /** L2-normalise the vector (default true). */
  normalize?: boolean;
  /** Aborting rejects with code ABORTED. */
  signal?: AbortSignal;
}

export interface BenchOptions {
  /** Aborting rejects with code ABORTED. */
  signal?: AbortSignal;
}

const PROMPT_TOKENIZE = { addSpecial: true, parseSpecial: true } as const;
/** Work that needs the whole context (every sequence): it waits for the requests before it, and runs alone. */
const EXCLUSIVE = { exclusive: true } as const;

/** Frees the native context of a wrapper that was garbage-collected without dispose(). */
const registry = new FinalizationRegistry<{ native: NativeContext; owner: Set<NativeContext> }>(({ native, owner }) => {
  owner.delete(native);
  native.dispose();
});

/** `Model` is the model the context belongs to: LlamaModel for every context that model.createContext() returns. */
export class LlamaContext<Model extends ModelHandle = ModelHandle> {
  readonly model: Model;
  /** The options this context was created with, defaults filled in. */
  readonly options: Readonly<Required<ContextOptions>>;
  /** True for contexts created for embeddings. */
  readonly embeddings: boolean;
  #native: NativeContext;
  #owner: Set<NativeContext>;
  #queue: TaskQueue;
  #running = new Set<{ abort(): void }>();
  #expected = 0;
  #disposing: Promise<void> | undefined;

  /** @internal Use model.createContext(). */
  constructor(model: Model, native: NativeContext, options: Required<ContextOptions>, embeddings: boolean, owner: Set<NativeContext>) {
    this.model = model;
    this.#native = native;
    this.options = Object.freeze({ ...options });
    this.embeddings = embeddings;
    this.#queue = new TaskQueue(options.parallel);
    this.#owner = owner;
    owner.add(native);
    registry.register(this, { native, owner }, this);
  }

  /** Tokens the context holds (llama.cpp may round the requested size up). */
  get contextSize(): number {
    return this.#native.disposed ? this.options.contextSize : this.#native.contextSize;
  }

  /**
   * The most tokens one request can hold (prompt and answer): contextSize, or each sequence's share of it on a
   * context created with parallel > 1 and kvUnified false.
   */
  get sequenceSize(): number {
    // The native side keeps the value it read from llama.cpp when the context was made, also after dispose.
    return this.#native.sequenceSize;
  }

  get batchSize(): number {
    return this.#native.disposed ? this.options.batchSize : this.#native.batchSize;
  }

  /** The micro-batch: the most tokens one embedding takes. */
  get ubatchSize(): number {
    return this.#native.disposed ? this.options.ubatchSize : this.#native.ubatchSize;
  }

  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /** Sequences that generate at once (the `parallel` option; 1 = requests run one after the other). */
  get parallel(): number {
    return this.options.parallel;
  }

  /** Sequences busy with a request now (clear(), embed() and bench() take all of them while they run). */
  get busySequences(): number {
    return this.#queue.active;
  }

  /** Requests announced (expectRequest(), or complete() before its prompt is tokenized) and not yet handed over. */
  get expectedRequests(): number {
    return this.#expected;
  }

  /** Requests waiting for a free sequence, in call order. */
  get queuedRequests(): number {
    return this.#queue.waiting;
  }

  /**
   * Counters of the native decode loop: llama_decode calls made for generation, the tokens they decoded, and the
   * most sequences one call carried (more than 1 shows that concurrent requests were batched).
   */
  get decodeStats(): NativeContextStats {
    this.#assertUsable();
    return this.#native.stats();
  }

  /** Tokens currently held in the KV cache. */
  get cachedTokenCount(): number {
    this.#assertUsable();
    return this.#native.cachedTokenCount();
  }

  /**
   * Announces a request that is on its way (parallel > 1): a server calls it when a request arrives, before its
   * prompt is templated and tokenized, and calls the returned function once the request was handed to complete()
   * or generate() (or dropped); calling it again does nothing. A context with no request running that gets one while
   * others are announced waits for them, at most 25 ms, so that requests arriving together have their prompts
   * evaluated in one decode instead of the first one's alone while the others wait for it. complete() and
   * generate() announce their own requests from the call until tokenization is done.
   */
  expectRequest(): () => void {
    if (this.options.parallel <= 1 || this.disposed) return () => {};
    this.#setExpected(this.#expected + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#setExpected(this.#expected - 1);
    };
  }

  #setExpected(count: number): void {
    this.#expected = count;
    if (!this.#native.disposed) this.#native.expect(count);
  }

  /** Generates a completion of `prompt` (text, or tokens used as they are) and returns the text. */
  async complete(prompt: string | Int32Array | MediaPrompt, options: GenerationOptions = {}): Promise<string> {
    return (await this.completeWithMeta(prompt, options)).text;
  }

  /** Like complete(), with the stop reason, generated tokens and timings. */
  async completeWithMeta(prompt: string | Int32Array | MediaPrompt, callOptions: GenerationOptions = {}): Promise<CompletionResult> {
    this.#assertUsable();
    const options = withDefaults(this.model.generationDefaults, callOptions);
    if (this.embeddings) throw invalid("this context was created for embeddings and cannot generate text");
    this.#assertCanGenerate();
    const grammar = this.model.grammarFor(options);
    const bias = checkLogitBias(options.logitBias, this.model.info.vocabSize);
    // Checks every option before anything is queued; the logit bias of text entries is filled in once tokenized.
    let sampling = toNativeSampling(options, grammar);
    const maxTokens = resolveMaxTokens(options, this.sequenceSize);
    const stop = checkStop(options.stop);
    checkShift(options);
    const { signal } = options;
    const media = prompt instanceof MediaPrompt ? prompt : undefined;
    let promptTokens = typeof prompt === "string" ? 0 : media ? media.tokens.length : (prompt as Int32Array).length;
    const arriving = this.expectRequest();
    try {
      // Tokenizing inside the queued task keeps requests in call order even when a later prompt tokenizes faster.
      return await this.#queue.run(async () => {
        this.#assertUsable();
        const tokens = typeof prompt === "string" ? await this.model.tokenize(prompt, PROMPT_TOKENIZE) : media ? media.tokens : (prompt as Int32Array);
        promptTokens = tokens.length;
        this.#checkPromptFits(tokens);
        if (bias.length > 0) sampling = { ...sampling, logitBias: await this.#logitBias(bias) };
        this.#assertUsable();
        if (signal?.aborted) return abortedResult(tokens.length);
        return this.#withAbort(signal, async (abort) => {
          let callbackError: { error: unknown } | undefined;
          const onText = (text: string) => {
            if (callbackError || !options.onTextChunk) return;
            try {
              options.onTextChunk(text);
            } catch (error) {
              callbackError = { error };
              abort.abort();
            }
          };
          let result: NativeGenerateResult;
          try {
            const generating = this.#native.generate({
              tokens,
              ...(media ? { media: media.native } : {}),
              maxTokens,
              sampling,
              stop,
              ignoreEos: options.ignoreEos === true,
              contextShift: options.contextShift === true,
              keep: options.keepTokens ?? 0,
              cacheReuse: options.cacheReuse ?? 0,
              abort,
              onText,
            });
            arriving();
            result = await generating;
          } catch (error) {
            if (callbackError) throw callbackError.error;
            throw nativeError(error, "INFERENCE", "generation failed");
          }
          if (callbackError) throw callbackError.error;
          return toCompletionResult(result);
        });
      }, signal);
    } catch (error) {
      if (signal?.aborted && isAbort(error) && !this.disposed) return abortedResult(promptTokens);
      throw error;
    } finally {
      arriving();
    }
  }

  /** Streams a completion: `for await (const piece of context.generate(prompt))`. */
  generate(prompt: string | Int32Array | MediaPrompt, options: GenerationOptions = {}): CompletionStream {
    this.#assertUsable();
    return createCompletionStream((onTextChunk, signal) => this.completeWithMeta(prompt, { ...options, onTextChunk, signal }), options);
  }

  /** Pooled embedding of `input`; the context must have been created with `embeddings: true`. */
  async embed(input: string | Int32Array, options: EmbedOptions = {}): Promise<Float32Array> {
    this.#assertUsable();
    if (!this.embeddings) throw invalid("embed() needs a context created with { embeddings: true }");
    const problem = embeddingProblem(this.model.info);
    if (problem !== undefined) throw invalid(`this model cannot embed text: ${problem}`);
    return this.#queue.run(async () => {
      this.#assertUsable();
      const tokens = typeof input === "string" ? await this.model.tokenize(input, PROMPT_TOKENIZE) : input;
      // One pass over the whole input: it must fit the context, the batch and the micro-batch (llama.cpp asserts on
      // a longer one for a non-causal model).
      const limit = Math.min(this.contextSize, this.batchSize, this.ubatchSize);
      if (tokens.length === 0) throw invalid("the text to embed is empty");
      if (tokens.length > limit) {
        throw invalid(`the text is ${tokens.length} tokens but the embedding context takes at most ${limit} at once`, "use a larger contextSize, batchSize and ubatchSize");
      }
      this.#assertUsable();
      return this.#withAbort(options.signal, async (abort) => {
        try {
          return await this.#native.embed(tokens, options.normalize ?? true, abort);
        } catch (error) {
          if (options.signal?.aborted) throw new LlamaOciError("ABORTED", "the embedding was aborted", { cause: options.signal.reason });
          throw nativeError(error, "INFERENCE", "embedding failed");
        }
      });
    }, options.signal, EXCLUSIVE);
  }

  /**
   * llama-bench's measurement: `nPrompt` random tokens evaluated in batches, then `nGen` tokens generated one at a
   * time, from an empty KV cache. Returns milliseconds for each part.
   */
  async bench(nPrompt: number, nGen: number, options: BenchOptions = {}): Promise<NativeBenchResult> {
    this.#assertUsable();
    for (const [name, value] of [["nPrompt", nPrompt], ["nGen", nGen]] as const) {
      if (!Number.isInteger(value) || value < 0) throw invalid(`${name} must be an integer >= 0 (got ${value})`);
    }
    if (nPrompt + nGen > this.contextSize) throw invalid(`bench needs ${nPrompt + nGen} tokens but the context holds ${this.contextSize}`);
    const problem = generationProblem(this.model.info, this.#native.hasMemory);
    if (problem !== undefined) throw invalid(`this model cannot be benchmarked: ${problem}`);
    return this.#queue.run(async () => {
      this.#assertUsable();
      return this.#withAbort(options.signal, async (abort) => {
        try {
          return await this.#native.bench(nPrompt, nGen, abort);
        } catch (error) {
          if (options.signal?.aborted) throw new LlamaOciError("ABORTED", "the benchmark was aborted", { cause: options.signal.reason });
          throw nativeError(error, "INFERENCE", "benchmark failed");
        }
      });
    }, options.signal, EXCLUSIVE);
  }

  /**
   * @internal The KV cache of the sequence that holds the longest prefix of `tokens` (ChatSession.save), taken when
   * no request runs on the context.
   */
  async saveSequence(tokens: Int32Array): Promise<NativeSequenceState> {
    this.#assertUsable();
    return this.#queue.run(
      async () => {
        this.#assertUsable();
        try {
          return await this.#native.saveSequence(tokens);
        } catch (error) {
          throw nativeError(error, "INFERENCE", "could not save the sequence");
        }
      },
      undefined,
      EXCLUSIVE,
    );
  }

  /** @internal Restores a saved sequence (llama.restoreChat); resolves with the tokens restored. */
  async restoreSequence(state: Uint8Array, tokens: Int32Array): Promise<number> {
    this.#assertUsable();
    return this.#queue.run(
      async () => {
        this.#assertUsable();
        try {
          return await this.#native.restoreSequence(state, tokens);
        } catch (error) {
          throw nativeError(error, "INFERENCE", "could not restore the sequence");
        }
      },
      undefined,
      EXCLUSIVE,
    );
  }

  /** Forgets the KV cache, of every sequence (after queued requests finish). */
  async clear(): Promise<void> {
    this.#assertUsable();
    await this.#queue.run(
      () => {
        this.#assertUsable();
        this.#native.clear();
      },
      undefined,
      EXCLUSIVE,
    );
  }

  /**
   * Frees the context. Running requests are stopped (they resolve with stopReason "abort"); requests still waiting
   * reject with code DISPOSED. Safe to call more than once; every call resolves when the context is freed.
   */
  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      for (const abort of this.#running) abort.abort();
      await this.#queue.idle();
      registry.unregister(this);
      this.#owner.delete(this.#native);
      this.#native.dispose();
    })();
    return this.#disposing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #assertUsable(): void {
    if (this.#disposing) throw disposedError("context");
    if (this.model.disposed) throw disposedError("model");
  }

  #assertCanGenerate(): void {
    const problem = generationProblem(this.model.info, this.#native.hasMemory);
    if (problem !== undefined) throw invalid(`this model cannot generate text: ${problem}`);
  }

  #checkPromptFits(tokens: Int32Array): void {
    if (tokens.length === 0) throw invalid("the prompt is empty");
    if (tokens.length >= this.sequenceSize) {
      const holds = this.sequenceSize < this.contextSize ? `each sequence of the context holds ${this.sequenceSize}` : `the context holds ${this.contextSize}`;
      throw invalid(`the prompt is ${tokens.length} tokens but ${holds}`, "use a larger contextSize or a shorter prompt");
    }
  }

  /** Logit biases by token id: a text entry gives the same bias to each of its tokens (as llama-server does). */
  async #logitBias(entries: Array<[number | string, number]>): Promise<Array<[number, number]>> {
    const out: Array<[number, number]> = [];
    for (const [token, bias] of entries) {
      if (typeof token === "number") {
        out.push([token, bias]);
        continue;
      }
      for (const id of await this.model.tokenize(token, { addSpecial: false, parseSpecial: false })) out.push([id, bias]);
    }
    return out;
  }

  /** Runs `work` with a fresh native abort flag tied to `signal` and to dispose(). */
  async #withAbort<T>(signal: AbortSignal | undefined, work: (abort: { abort(): void; readonly aborted: boolean }) => Promise<T>): Promise<T> {
    const flag = getBinding().createAbortFlag();
    const onAbort = () => flag.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) flag.abort();
    this.#running.add(flag);
    try {
      return await work(flag);
    } finally {
      this.#running.delete(flag);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

function checkShift(options: GenerationOptions): void {
  if (options.contextShift !== undefined && typeof options.contextShift !== "boolean") throw invalid("contextShift must be a boolean");
  for (const key of ["keepTokens", "cacheReuse"] as const) {
    const value = options[key];
    if (value !== undefined && (!Number.isInteger(value) || value < 0)) throw invalid(`${key} must be an integer >= 0 (got ${String(value)})`);
  }
}

function checkStop(stop: string[] | undefined): string[] {
  if (stop === undefined) return [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== "string")) throw invalid("stop must be an array of strings");
  return stop.filter((s) => s.length > 0);
}

function abortedResult(promptTokens: number): CompletionResult {
  return {
    text: "",
    stopReason: "abort",
    tokens: new Int32Array(0),
    timings: {
      promptTokens,
      cachedTokens: 0,
      generatedTokens: 0,
      promptMs: 0,
      generateMs: 0,
      promptTokensPerSecond: 0,
      generatedTokensPerSecond: 0,
      discardedTokens: 0,
    },
  };
}

/** `defaults` under what the call passed: an option the call leaves undefined takes the default. */
function withDefaults(defaults: Readonly<GenerationOptions>, options: GenerationOptions): GenerationOptions {
  const merged: GenerationOptions = { ...defaults };
  for (const [key, value] of Object.entries(options)) if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  return merged;
}
