/** The errors the inference API raises for disposed objects and for failures reported by the addon. */
import { LlamaOciError, type ErrorCode } from "../errors.js";

export function disposedError(what: string): LlamaOciError {
  return new LlamaOciError("DISPOSED", `this ${what} has been disposed`, { hint: `create a new ${what} to continue` });
}

/** A native failure as a LlamaOciError with `code`, keeping the native message. */
export function nativeError(error: unknown, code: ErrorCode, prefix?: string): LlamaOciError {
  if (error instanceof LlamaOciError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new LlamaOciError(code, prefix ? `${prefix}: ${message}` : message, { cause: error });
}
