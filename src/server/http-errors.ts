/**
 * Errors the server answers with, and their two wire shapes: OpenAI's `{ error: { message, type, param, code } }`
 * (everything but /api) and Ollama's `{ error }` (/api). Library errors (LlamaOciError) map to a status by code;
 * the message is the library's one line and hint, which never hold credentials.
 */
import { isAbort, LlamaOciError } from "../errors.js";
import { QueueFullError } from "./admission.js";

export interface HttpErrorOptions {
  /** OpenAI's error type; default from the status. */
  type?: string;
  code?: string | null;
  /** The request field at fault, as OpenAI names it ("messages[0].content"). */
  param?: string | null;
  headers?: Record<string, string>;
}

export class HttpError extends Error {
  override name = "HttpError";
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: HttpErrorOptions = {}) {
    super(message);
    this.status = status;
    this.type = options.type ?? defaultType(status);
    this.code = options.code ?? null;
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }
}

export function badRequest(message: string, param?: string, code?: string): HttpError {
  return new HttpError(400, message, { param: param ?? null, code: code ?? null });
}

export function modelNotFound(message: string): HttpError {
  return new HttpError(404, message, { code: "model_not_found", param: "model" });
}

function defaultType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 404) return "not_found_error";
  if (status === 503) return "unavailable_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

/** The one line a LlamaOciError (or any error) reads as, hint in parentheses, whitespace runs folded. */
export function oneLine(error: unknown): string {
  const text =
    error instanceof LlamaOciError ? `${error.message}${error.hint ? ` (${error.hint})` : ""}` : error instanceof Error ? error.message : String(error);
  return text.replace(/\s+/g, " ").trim();
}

/** Keyed by string so that codes added to ErrorCode later need no change here (they answer 500). */
const STATUS_BY_CODE: Record<string, number | undefined> = {
  INVALID_ARGUMENT: 400,
  INVALID_REFERENCE: 400,
  NOT_FOUND: 404,
  OFFLINE: 404,
  UNSUPPORTED_ARTIFACT: 422,
  UNAUTHORIZED: 502,
  DENIED: 502,
  RATE_LIMITED: 502,
  NETWORK: 502,
  REGISTRY: 502,
  DIGEST_MISMATCH: 502,
  SIZE_MISMATCH: 502,
  CREDENTIALS: 502,
  NO_SPACE: 507,
  DISPOSED: 503,
  MODEL_LOAD: 500,
  INFERENCE: 500,
  CACHE: 500,
  NATIVE_UNAVAILABLE: 500,
};

/** Any error thrown while serving a request, as an HttpError. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof QueueFullError) {
    return new HttpError(503, error.message, { code: "queue_full", headers: { "retry-after": "1" } });
  }
  if (error instanceof LlamaOciError) {
    const status = STATUS_BY_CODE[error.code] ?? 500;
    const code =
      error.code === "NOT_FOUND" || error.code === "OFFLINE" ? "model_not_found" : error.code === "INVALID_REFERENCE" ? "invalid_model" : error.code.toLowerCase();
    const param = error.code === "INVALID_REFERENCE" || code === "model_not_found" ? "model" : null;
    return new HttpError(status, oneLine(error), { code, param, headers: status === 503 ? { "retry-after": "1" } : {} });
  }
  if (isAbort(error)) return new HttpError(499, "the request was aborted", { code: "aborted" });
  return new HttpError(500, oneLine(error) || "internal error", { code: "internal_error" });
}

/** The body for `path`: Ollama's shape under /api, OpenAI's elsewhere. */
export function errorBody(path: string, error: HttpError): object {
  if (isOllamaPath(path)) return { error: error.message };
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
}

export function isOllamaPath(path: string): boolean {
  return path === "/api" || path.startsWith("/api/");
}
