/**
 * What every command that talks to a registry shares: the common flags, and where progress, warnings and HTTP
 * traces go (progress and warnings through the renderer, so they do not break its redrawn lines; traces to stderr).
 */
import { createProgressRenderer, type ProgressRenderer } from "../oci/progress-renderer.js";
import type { ProgressListener } from "../oci/progress.js";
import type { CliContext } from "./context.js";

/** parseArgs options of the flags every registry command takes. */
export const REGISTRY_FLAGS = {
  "cache-dir": { type: "string" },
  "insecure-registry": { type: "string", multiple: true },
  quiet: { type: "boolean", short: "q" },
  json: { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

export interface Reporting {
  verbose: true | undefined;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  onProgress: ProgressListener;
  onWarning: (message: string) => void;
  onDebug: (message: string) => void;
}

export function startReporting(cli: CliContext, flags: { quiet?: boolean; verbose?: boolean }): { renderer: ProgressRenderer; reporting: Reporting } {
  const renderer = createProgressRenderer({ stream: cli.stderr, quiet: flags.quiet, env: cli.env });
  return {
    renderer,
    reporting: {
      verbose: flags.verbose || undefined,
      env: cli.env,
      signal: cli.signal,
      onProgress: renderer.onProgress,
      onWarning: (message) => renderer.onProgress({ type: "warning", message }),
      onDebug: (message) => cli.stderr.write(`debug: ${message}\n`),
    },
  };
}
