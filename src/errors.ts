/**
 * Every failure that reaches a user is a LlamaOciError: a one-line message that says what went wrong, a stable
 * machine-readable code, and where useful a hint that says what to do next. Messages never contain credentials.
 */
export type ErrorCode =
  | "INVALID_REFERENCE"
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "UNAUTHORIZED"
  | "DENIED"
  | "RATE_LIMITED"
  | "NETWORK"
  | "REGISTRY"
  | "DIGEST_MISMATCH"
  | "SIZE_MISMATCH"
  | "UNSUPPORTED_ARTIFACT"
  | "OFFLINE"
  | "CREDENTIALS"
  | "ABORTED"
  | "CACHE"
  | "NO_SPACE"
  | "NATIVE_UNAVAILABLE"
  | "MODEL_LOAD"
  | "INFERENCE"
  | "DISPOSED"
  | "CHAT_FILE";

export class LlamaOciError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  /** HTTP status of the response that caused the error, when there was one. */
  readonly status?: number;

  constructor(code: ErrorCode, message: string, options: { hint?: string; status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LlamaOciError";
    this.code = code;
    this.hint = options.hint;
    this.status = options.status;
  }
}

/** The error an aborted operation rejects with; keeps the signal's reason as its cause. */
export function abortError(signal: AbortSignal | undefined): LlamaOciError {
  const reason: unknown = signal?.reason;
  const message = reason instanceof Error && reason.name !== "AbortError" ? reason.message : "the operation was aborted";
  return new LlamaOciError("ABORTED", message, { cause: reason });
}

export function isAbort(error: unknown): boolean {
  return (
    (error instanceof LlamaOciError && error.code === "ABORTED") ||
    (error instanceof Error && (error.name === "AbortError" || (error as { code?: string }).code === "ABORT_ERR"))
  );
}
