/**
 * How the CLI reports failures: one line on stderr, `error: <what went wrong> (<what to do>)`, terminal-safe (a
 * registry's error text can hold escape sequences), and how it prints JSON results.
 */
import { LlamaOciError } from "../errors.js";
import { terminalSafe, terminalSafeJson } from "../util/terminal.js";

export function formatError(error: unknown): string {
  if (error instanceof LlamaOciError) {
    return `error: ${oneLine(error.message)}${error.hint ? ` (${oneLine(error.hint)})` : ""}`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `error: ${oneLine(message)}`;
}

function oneLine(text: string): string {
  return terminalSafe(text.replace(/\s*\n\s*/g, " ")).trim();
}

/** A result as JSON on stdout, C1 controls escaped too. */
export function jsonOutput(value: unknown): string {
  return `${terminalSafeJson(value)}\n`;
}

export class UsageError extends Error {
  override name = "UsageError";
}
