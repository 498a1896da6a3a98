/**
 * What every command that talks to a registry shares: the common flags, and where progress, warnings and HTTP
 * traces go (progress and warnings through the renderer, so they do not break its redrawn lines; traces to stderr).
 */
import type { ProgressListener } from "../oci/progress.js";
import { terminalSafe } from "../util/terminal.js";
import { createProgressRenderer, type ProgressRenderer } from "./progress-renderer.js";
import type { CliContext } from "./context.js";

/** parseArgs options of the flags every command that reaches a registry takes: pull, run, chat, bench, inspect, push. */
export const REGISTRY_FLAGS = {
  "cache-dir": { type: "string" },
  "insecure-registry": { type: "string", multiple: true },
  quiet: { type: "boolean", short: "q" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

/** The flags of every command that pulls a model it lacks: pull, run, chat, bench. */
export const PULL_FLAGS = {
  offline: { type: "boolean" },
  verify: { type: "boolean" },
  "registry-mirror": { type: "string", multiple: true },
  platform: { type: "string" },
} as const;

/** Help lines for REGISTRY_FLAGS (before -q, -v, -h, which each command lists with its own wording). */
export const REGISTRY_USAGE = `  --cache-dir <dir>           cache root (default: $LLAMA_CACHE, $XDG_CACHE_HOME/llama.cpp, ~/.cache/llama.cpp)
  --insecure-registry <host>  allow plain HTTP for this registry (repeatable; also LLAMA_OCI_INSECURE_REGISTRIES)`;

/** Help lines for PULL_FLAGS. */
export const PULL_USAGE_LINES = `  --offline                   resolve from the cache only, no network (also LLAMA_OCI_OFFLINE=1)
  --verify                    re-hash cached files instead of trusting the recorded verification
  --registry-mirror <url>     try this mirror before the registry: URL for Docker Hub, HOST=URL for registry HOST
                              (repeatable, in order; also LLAMA_OCI_REGISTRY_MIRRORS, comma-separated)
  --platform <os/arch[/v]>    which child of an image index to pull (default DOCKER_DEFAULT_PLATFORM, else the model)`;

interface RegistryValues {
  "cache-dir"?: string;
  "insecure-registry"?: string[];
}

interface PullValues extends RegistryValues {
  offline?: boolean;
  verify?: boolean;
  "registry-mirror"?: string[];
  platform?: string;
}

/** RegistryAccessOptions from REGISTRY_FLAGS. */
export function registryOptions(values: RegistryValues): { cacheDir?: string; insecureRegistries?: string[] } {
  return { cacheDir: values["cache-dir"], insecureRegistries: values["insecure-registry"] };
}

/** PullOptions from REGISTRY_FLAGS and PULL_FLAGS. */
export function pullOptions(values: PullValues): {
  cacheDir?: string;
  insecureRegistries?: string[];
  offline?: boolean;
  verify?: boolean;
  registryMirrors?: string[];
  platform?: string;
} {
  return { ...registryOptions(values), offline: values.offline, verify: values.verify, registryMirrors: values["registry-mirror"], platform: values.platform };
}

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
      onWarning: (message) => renderer.onProgress({ type: "warning", message: terminalSafe(message) }),
      onDebug: (message) => cli.stderr.write(`debug: ${terminalSafe(message)}\n`),
    },
  };
}
