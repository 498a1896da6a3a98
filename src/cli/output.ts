/** How the CLI reports failures: one line on stderr, `error: <what went wrong> (<what to do>)`. */
import { LlamaOciError } from "../errors.js";

export function formatError(error: unknown): string {
  if (error instanceof LlamaOciError) {
    return `error: ${oneLine(error.message)}${error.hint ? ` (${oneLine(error.hint)})` : ""}`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `error: ${oneLine(message)}`;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

export class UsageError extends Error {
  override name = "UsageError";
}
