/**
 * Loads the native addon (build/Release/llama_oci.node, or $LLAMA_OCI_ADDON) once, on first use, so that pulling
 * models works on machines where the addon was never built.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { isMainThread } from "node:worker_threads";
import { LlamaOciError } from "../errors.js";
import { applyLoggerTo } from "./logger.js";
import { moduleDir } from "./module-dir.js";
import type { NativeBinding } from "./native-types.js";

const BUILD_HINT = "run `npm run build:native` (needs cmake and a C++ compiler)";

let binding: NativeBinding | undefined;

/** The package root: the nearest folder above this module whose package.json is llama-oci's. */
export function packageRoot(): string {
  for (let dir = moduleDir; ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && readPackageName(manifest) === "llama-oci") return dir;
    if (dirname(dir) === dir) return resolve(moduleDir, "..", "..");
  }
}

function readPackageName(path: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(path, "utf8")) as { name?: string }).name;
  } catch {
    return undefined;
  }
}

export function addonPath(env: NodeJS.ProcessEnv = process.env): string {
  const override = env.LLAMA_OCI_ADDON;
  return override ? resolve(override) : join(packageRoot(), "build", "Release", "llama_oci.node");
}

/** The loaded addon; throws NATIVE_UNAVAILABLE when it is not built or does not load. */
export function getBinding(): NativeBinding {
  if (binding) return binding;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new LlamaOciError("NATIVE_UNAVAILABLE", `the llama.cpp addon is not built (no ${path})`, { hint: BUILD_HINT });
  }
  let loaded: NativeBinding;
  try {
    loaded = createRequire(join(moduleDir, "x.js"))(path) as NativeBinding;
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0]! : String(error);
    throw new LlamaOciError("NATIVE_UNAVAILABLE", `the llama.cpp addon ${path} does not load: ${reason}`, {
      hint: BUILD_HINT,
      cause: error,
    });
  }
  applyLoggerTo(loaded);
  // process.exit() on the main thread runs C++ static destructors without tearing the environment down first: stop
  // native workers before that. (Worker threads tear their environment down, which stops them.)
  if (isMainThread && typeof loaded.prepareForExit === "function") process.once("exit", () => loaded.prepareForExit());
  binding = loaded;
  return loaded;
}

/** The addon if it has been loaded already; never loads it. */
export function loadedBinding(): NativeBinding | undefined {
  return binding;
}
