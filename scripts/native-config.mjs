// Shared by the native build scripts: where llama.cpp's source is, which version is pinned, which GPU backend
// was asked for. The pinned version lives in package.json ("llamaCpp") and nowhere else.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const pinned = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")).llamaCpp;
export const bundledSourceDir = join(packageRoot, "deps", "llama.cpp");
export const buildDir = join(packageRoot, "build");
export const addonPath = join(buildDir, "Release", "llama_oci.node");

/** LLAMA_CPP_DIR points the build at another llama.cpp checkout; otherwise the pinned one under deps/. */
export function llamaCppDir(env = process.env) {
  return env.LLAMA_CPP_DIR ? resolve(env.LLAMA_CPP_DIR) : bundledSourceDir;
}

export const GPU_BACKENDS = ["cpu", "cuda", "vulkan", "metal"];

/** LLAMA_OCI_GPU (or --gpu): cpu | cuda | vulkan | metal. Metal is the default on Apple Silicon, CPU elsewhere. */
export function requestedGpu(argv = process.argv, env = process.env) {
  const flag = argv.find((a) => a.startsWith("--gpu="))?.slice("--gpu=".length);
  const value = (flag ?? env.LLAMA_OCI_GPU ?? "").trim().toLowerCase();
  if (!value || value === "auto") return process.platform === "darwin" && process.arch === "arm64" ? "metal" : "cpu";
  if (!GPU_BACKENDS.includes(value)) {
    throw new Error(`LLAMA_OCI_GPU=${value} is not a backend this build knows; use one of ${GPU_BACKENDS.join(", ")}`);
  }
  return value;
}

export function hasSource(dir) {
  return existsSync(join(dir, "CMakeLists.txt")) && existsSync(join(dir, "include", "llama.h"));
}
