/**
 * Turns a registry's error response ({"errors":[{code,message,detail}]}, or plain text) into one clear line
 * with a hint. Reads at most 64 KiB of the body.
 */
import { LlamaOciError, type ErrorCode } from "../../errors.js";
import { isObject } from "../../util/objects.js";
import { terminalSafe, terminalSafeLines } from "../../util/terminal.js";
import { DOCKER_HUB } from "../name/index.js";
import { headerValue, type HttpResponse } from "./http-client.js";

const MAX_ERROR_BODY = 64 * 1024;

export interface RegistryErrorEntry {
  code?: string;
  message?: string;
}

export async function readErrorBody(response: HttpResponse): Promise<{ text: string; entries: RegistryErrorEntry[] }> {
  if (response.status === 416 || response.status === 304) {
    // registry 2.8.2 announces a wrong Content-Length on 416 bodies: never read them.
    response.body.destroy();
    return { text: "", entries: [] };
  }
  let text = "";
  try {
    for await (const chunk of response.body) {
      text += (chunk as Buffer).toString("utf8");
      if (text.length >= MAX_ERROR_BODY) break;
    }
  } catch {
    // a broken error body still leaves us the status line
  } finally {
    response.body.destroy();
  }
  text = text.slice(0, MAX_ERROR_BODY);
  let entries: RegistryErrorEntry[] = [];
  try {
    const parsed = JSON.parse(text) as { errors?: unknown[] };
    if (Array.isArray(parsed.errors)) {
      entries = parsed.errors.filter(isObject).map((e) => ({ code: safeField(e.code), message: safeField(e.message) }));
    }
  } catch {
    // not JSON: a 4xx body may be plain text
  }
  // The registry's words end up in error messages: no escape sequence of theirs may reach a terminal.
  return { text: terminalSafeLines(text), entries };
}

function safeField(value: unknown): string | undefined {
  return typeof value === "string" ? terminalSafe(value).slice(0, 500) : undefined;
}

export function loginCommand(registry: string): string {
  return registry === DOCKER_HUB ? "docker login" : `docker login ${registry}`;
}

export interface ErrorContext {
  registry: string;
  /** What was asked for, e.g. "docker.io/ai/smollm2:latest" or "blob sha256:ab12…". */
  what: string;
}

export async function registryError(response: HttpResponse, context: ErrorContext): Promise<LlamaOciError> {
  const { text, entries } = await readErrorBody(response);
  const status = response.status;
  const codes = entries.map((e) => (e.code ?? "").toUpperCase());
  const detail = entries
    .map((e) => [e.code, e.message].filter(Boolean).join(": "))
    .filter(Boolean)
    .join("; ");
  const plain = text.trim().split("\n")[0]?.slice(0, 200) ?? "";
  const reason = detail || plain || `HTTP ${status}`;
  const login = loginCommand(context.registry);

  let code: ErrorCode = "REGISTRY";
  let message = `${context.registry} refused ${context.what}: ${reason}`;
  let hint: string | undefined;

  if (status === 429 || codes.includes("TOOMANYREQUESTS")) {
    code = "RATE_LIMITED";
    const limits = rateLimitSummary(response);
    message = `${context.registry} rate limit reached while fetching ${context.what}${limits ? ` (${limits})` : ""}`;
    hint = `wait before pulling again, or log in (${login}) for a higher limit`;
  } else if (status === 404 || codes.some((c) => c === "MANIFEST_UNKNOWN" || c === "NAME_UNKNOWN" || c === "BLOB_UNKNOWN")) {
    code = "NOT_FOUND";
    message = `${context.what} not found on ${context.registry}${detail ? ` (${detail})` : ""}`;
    hint =
      context.registry === DOCKER_HUB
        ? "check the name and tag; a name without a namespace means ai/<name> on Docker Hub"
        : "check the repository name and tag";
  } else if (status === 401 || codes.includes("UNAUTHORIZED")) {
    code = "UNAUTHORIZED";
    message = `authentication required for ${context.what} on ${context.registry}${detail ? ` (${detail})` : ""}`;
    hint = `log in with '${login}' or pass credentials`;
  } else if (status === 403 || codes.includes("DENIED")) {
    code = "DENIED";
    message = `access to ${context.what} denied by ${context.registry}${detail ? ` (${detail})` : ""}`;
    hint = `check that your account may pull it ('${login}')`;
  } else if (status >= 500) {
    message = `${context.registry} failed with HTTP ${status} for ${context.what}: ${reason}`;
    hint = "the registry has a problem; try again later";
  }
  return new LlamaOciError(code, message, { hint, status });
}

export function rateLimitSummary(response: HttpResponse): string {
  const parts: string[] = [];
  const limit = headerValue(response.headers, "ratelimit-limit");
  const remaining = headerValue(response.headers, "ratelimit-remaining");
  const source = headerValue(response.headers, "docker-ratelimit-source");
  const retryAfter = headerValue(response.headers, "retry-after");
  if (limit) parts.push(`limit ${limit}`);
  if (remaining) parts.push(`remaining ${remaining}`);
  if (source) parts.push(`source ${source}`);
  if (retryAfter) parts.push(`retry after ${retryAfter}`);
  return terminalSafe(parts.join(", "));
}
