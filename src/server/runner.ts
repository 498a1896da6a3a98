/**
 * The sequence runner of a loaded model: `parallel` sequences that generate at the same time, a bounded queue in
 * front of them, and the per-model counts that /metrics and /api/ps show. Admission (slots and queue) is here; the
 * sequences themselves (one batched context of the model) are sequences.ts's.
 */
import type { CompletionResult } from "../llama/completion.js";
import type { LlamaModel } from "../llama/model.js";
import type { ContextOptions, GenerationOptions } from "../llama/options.js";
import { Admission } from "./admission.js";
import type { Prompt } from "./generation.js";
import { createSequenceBackend, type SequenceBackend } from "./sequences.js";

export { QueueFullError } from "./admission.js";

export interface RunOptions extends GenerationOptions {
  /** Called synchronously when the request got a sequence or a place in the queue (not when it was refused). */
  onAdmitted?: () => void;
  /** Called when the request's sequence starts working on it. */
  onStart?: () => void;
  /** The request's announcement (expect()), ended once the sequences have the request. */
  arriving?: () => void;
}

export interface SequenceRunner {
  /** Sequences that can generate at once. */
  readonly parallel: number;
  /** Sequences working on a request now. */
  readonly busy: number;
  /** Requests waiting for a sequence. */
  readonly queued: number;
  /** Tokens one sequence holds: a prompt must be shorter than this. */
  readonly contextSize: number;
  /**
   * Generates a completion of `tokens` on a free sequence, waiting in the queue when all are busy. Throws
   * QueueFullError synchronously when the queue is full. An aborted signal resolves with stopReason "abort" once
   * running (the sequence is then free again), or rejects with code ABORTED while still queued.
   */
  run(tokens: Prompt, options?: RunOptions): Promise<CompletionResult>;
  /**
   * Announces a request that will come to run() soon (called as it arrives, before its prompt is tokenized): idle
   * sequences wait briefly for announced requests so that requests arriving together share their first decode.
   * Returns the function that ends the announcement; pass it to run() as `arriving` (the sequences end it once they
   * have the request), and call it when the request ends in any case, for the paths that never get that far (the
   * server's leases do). Calling it more than once does nothing.
   */
  expect(): () => void;
  /** Stops running requests, rejects queued ones and frees every sequence. */
  dispose(): Promise<void>;
}

export interface SequenceRunnerOptions {
  parallel: number;
  maxQueue: number;
  /** Options of each sequence's context (contextSize is per sequence). */
  context: ContextOptions;
}

export function createSequenceRunner(model: LlamaModel, options: SequenceRunnerOptions): SequenceRunner {
  return new AdmittingRunner(createSequenceBackend(model, { parallel: options.parallel, context: options.context }), options);
}

class AdmittingRunner implements SequenceRunner {
  readonly parallel: number;
  #admission: Admission;
  #backend: SequenceBackend;
  #disposing: Promise<void> | undefined;

  constructor(backend: SequenceBackend, options: SequenceRunnerOptions) {
    this.parallel = options.parallel;
    this.#backend = backend;
    this.#admission = new Admission(options.parallel, options.maxQueue);
  }

  get busy(): number {
    return this.#admission.running;
  }

  get queued(): number {
    return this.#admission.queued;
  }

  get contextSize(): number {
    return this.#backend.contextSize;
  }

  run(tokens: Prompt, options: RunOptions = {}): Promise<CompletionResult> {
    if (this.#disposing) return Promise.reject(new Error("the model is being unloaded"));
    const { onAdmitted, onStart, arriving, ...generation } = options;
    const admitted = this.#admission.acquire(options.signal, onAdmitted);
    return admitted.then(async (release) => {
      try {
        onStart?.();
        return await this.#backend.run(tokens, generation, arriving);
      } finally {
        release();
      }
    });
  }

  expect(): () => void {
    return this.#backend.expect();
  }

  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      this.#admission.cancelWaiting(new Error("the model was unloaded"));
      await this.#backend.dispose();
    })();
    return this.#disposing;
  }
}
