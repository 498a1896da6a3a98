/**
 * The result of a completion, and the stream a completion, a model's generate() or a chat's stream() returns.
 */
import type { NativeGenerateResult, NativeStopReason } from "./native-types.js";
import type { GenerationOptions } from "./options.js";

export type StopReason = NativeStopReason;

export interface CompletionTimings {
  /** Tokens in the prompt, including those reused from the KV cache. */
  promptTokens: number;
  /** Prompt tokens reused from the KV cache (not evaluated again). */
  cachedTokens: number;
  generatedTokens: number;
  /** Time spent evaluating the prompt tokens that were not cached. */
  promptMs: number;
  generateMs: number;
  /** Evaluated (not cached) prompt tokens per second; 0 when nothing was evaluated. */
  promptTokensPerSecond: number;
  generatedTokensPerSecond: number;
  /** Tokens context shifts dropped from the KV cache while generating (see GenerationOptions.contextShift). */
  discardedTokens: number;
}

export interface CompletionResult {
  text: string;
  /** "eos": the model ended its answer; "maxTokens"; "stop": a stop string matched; "abort"; "contextFull". */
  stopReason: StopReason;
  /** The generated tokens. */
  tokens: Int32Array;
  timings: CompletionTimings;
}

/** Text pieces as they are generated; `result` settles when generation ends. Leaving the loop early stops it. */
export interface CompletionStream extends AsyncIterable<string> {
  readonly result: Promise<CompletionResult>;
}

export function toCompletionResult(result: NativeGenerateResult): CompletionResult {
  const evaluated = result.promptTokens - result.cachedTokens;
  return {
    text: result.text,
    stopReason: result.stopReason,
    tokens: result.tokens,
    timings: {
      promptTokens: result.promptTokens,
      cachedTokens: result.cachedTokens,
      generatedTokens: result.generatedTokens,
      promptMs: result.promptMs,
      generateMs: result.generateMs,
      promptTokensPerSecond: perSecond(evaluated, result.promptMs),
      generatedTokensPerSecond: perSecond(result.generatedTokens, result.generateMs),
      discardedTokens: result.discardedTokens ?? 0,
    },
  };
}

function perSecond(tokens: number, ms: number): number {
  return ms > 0 ? (tokens * 1000) / ms : 0;
}

/** Pieces as they come; `result` settles when the work ends. Leaving the loop early stops it. */
export interface PieceStream<Piece, Result> extends AsyncIterable<Piece> {
  readonly result: Promise<Result>;
}

/**
 * Adapts a callback-style completion to an async iterator. Generation starts at once; pieces are buffered until
 * read. Leaving a `for await` loop early (break, throw) aborts the generation and waits for it to stop.
 */
export function createCompletionStream(
  run: (onTextChunk: (text: string) => void, signal: AbortSignal) => Promise<CompletionResult>,
  options: Pick<GenerationOptions, "signal" | "onTextChunk">,
): CompletionStream {
  return createPieceStream<string, CompletionResult>((push, signal) =>
    run((text) => {
      push(text);
      options.onTextChunk?.(text);
    }, signal),
  options.signal);
}

/** createCompletionStream for any kind of piece (a chat's deltas, say). */
export function createPieceStream<Piece, Result>(
  run: (push: (piece: Piece) => void, signal: AbortSignal) => Promise<Result>,
  callerSignal: AbortSignal | undefined,
): PieceStream<Piece, Result> {
  const controller = new AbortController();
  const signal = callerSignal ? AbortSignal.any([callerSignal, controller.signal]) : controller.signal;
  const pieces: Piece[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  let failure: { error: unknown } | undefined;

  const push = (piece: Piece) => {
    pieces.push(piece);
    wake?.();
  };
  const result = run(push, signal).then(
    (value) => {
      finished = true;
      wake?.();
      return value;
    },
    (error: unknown) => {
      finished = true;
      failure = { error };
      wake?.();
      throw error;
    },
  );
  // Errors reach the reader through the iterator; an unread `result` must not become an unhandled rejection.
  result.catch(() => {});

  const iterator: AsyncIterableIterator<Piece> = {
    async next(): Promise<IteratorResult<Piece>> {
      for (;;) {
        if (pieces.length > 0) return { done: false, value: pieces.shift()! };
        if (finished) {
          if (failure) throw failure.error;
          return { done: true, value: undefined };
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    },
    async return(): Promise<IteratorResult<Piece>> {
      controller.abort(new Error("the stream's reader stopped reading"));
      pieces.length = 0;
      await result.catch(() => {});
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return { result, [Symbol.asyncIterator]: () => iterator };
}
