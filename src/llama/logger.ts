/**
 * Where llama.cpp's own log goes. Quiet by default: nothing is printed unless setLogger() installs a function.
 * The choice is remembered so it also applies when the addon is loaded later.
 */
import type { NativeBinding, NativeLogLevel } from "./native-types.js";

export type LlamaLogLevel = NativeLogLevel;
export type LlamaLogger = (level: LlamaLogLevel, text: string) => void;

const LEVELS: readonly LlamaLogLevel[] = ["debug", "info", "warn", "error"];

let current: { logger: LlamaLogger | null; level: LlamaLogLevel } = { logger: null, level: "warn" };

export function isLogLevel(value: string): value is LlamaLogLevel {
  return (LEVELS as readonly string[]).includes(value);
}

/** Installs (or with null removes) the logger on the addon `binding` when given, and remembers it for later loads. */
export function setLlamaLogger(logger: LlamaLogger | null, level: LlamaLogLevel, binding: NativeBinding | undefined): void {
  if (!isLogLevel(level)) throw new TypeError(`log level must be one of ${LEVELS.join(", ")} (got ${String(level)})`);
  current = { logger, level };
  if (binding) applyLoggerTo(binding);
}

export function applyLoggerTo(binding: NativeBinding): void {
  const { logger, level } = current;
  binding.setLogger(logger === null ? null : (lvl, text) => safeCall(logger, lvl, text), level);
}

/** A throwing logger must not take down the native log path. */
function safeCall(logger: LlamaLogger, level: LlamaLogLevel, text: string): void {
  try {
    logger(level, text);
  } catch {
    // ignored: logging is best effort
  }
}
