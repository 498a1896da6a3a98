#!/usr/bin/env node
// Builds the native addon (build/Release/llama_oci.node) with cmake-js: fetches the pinned llama.cpp source if
// needed, then configures and compiles. Skipped when nothing that goes into the build changed since last time.
//
//   node scripts/build-native.mjs [--force] [--tools] [--gpu=cpu|cuda|vulkan|metal]
//
//   --tools   also build llama.cpp's llama-completion, llama-simple, llama-bench, llama-quantize, llama-batched and
//             llama-embedding, llama-mtmd-cli, ggml-rpc-server, and llama-oci-chat-oracle (test/oracles), for tests and
//             benchmarks
//   LLAMA_OCI_GPU       backend, as --gpu (default cpu; metal on Apple Silicon)
//   LLAMA_CPP_DIR       build against this llama.cpp checkout instead of the pinned one
//   LLAMA_OCI_NATIVE=0  portable build (no -march=native)
//   LLAMA_OCI_AMX=1     keep ggml's Intel AMX kernels in a native build (left out by default: they crash in the
//                       pinned llama.cpp, see cmake/amx.cmake)
//   LLAMA_OCI_SKIP_NATIVE_BUILD=1  skip this step (e.g. when only the registry client is used)
//   --check-main  print that the script runs as the main module and exit (tests)
//
// Any failure exits non-zero with its reason, so that `npm install` fails rather than leave a package without addon.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { join, relative } from "node:path";
import { fetchLlamaCpp } from "./fetch-llama-cpp.mjs";
import { addonPath, buildDir, packageRoot, requestedGpu } from "./native-config.mjs";
import { isMainModule } from "./main-module.mjs";

export const TOOL_TARGETS = [
  "llama-completion",
  "llama-simple",
  "llama-bench",
  "llama-quantize",
  "llama-batched",
  "llama-embedding",
  "llama-mtmd-cli",
  "llama-oci-chat-oracle",
  "ggml-rpc-server",
];

function main() {
  if (/^(1|true|yes)$/i.test(process.env.LLAMA_OCI_SKIP_NATIVE_BUILD ?? "")) {
    console.error("llama-oci: LLAMA_OCI_SKIP_NATIVE_BUILD is set; not building the native addon");
    return;
  }
  const force = process.argv.includes("--force");
  const tools = process.argv.includes("--tools") || /^(1|true|yes)$/i.test(process.env.LLAMA_OCI_BUILD_TOOLS ?? "");
  const gpu = requestedGpu();
  const native = !/^(0|false|no|off)$/i.test(process.env.LLAMA_OCI_NATIVE ?? "");
  const amx = /^(1|true|yes|on)$/i.test(process.env.LLAMA_OCI_AMX ?? "");
  requireCommand("cmake", "cmake is needed to build llama.cpp: install it (Debian: apt-get install cmake)");

  const sourceDir = fetchLlamaCpp();
  const stamp = buildStamp({ sourceDir, gpu, native, amx, tools });
  const stampPath = join(buildDir, ".llama-oci-build-stamp");
  const toolsPresent = !tools || TOOL_TARGETS.every((t) => existsSync(toolPath(t)));
  if (!force && existsSync(addonPath) && toolsPresent && existsSync(stampPath) && readFileSync(stampPath, "utf8") === stamp) {
    console.error("llama-oci: native addon is up to date");
    return;
  }

  const started = Date.now();
  const jobs = String(Math.max(1, availableParallelism()));
  const cmakeJs = createRequire(import.meta.url).resolve("cmake-js/bin/cmake-js");
  const defines = [
    `--CDLLAMA_CPP_DIR=${sourceDir}`,
    `--CDLLAMA_OCI_GPU=${gpu}`,
    `--CDLLAMA_OCI_NATIVE=${native ? "ON" : "OFF"}`,
    `--CDLLAMA_OCI_AMX=${amx ? "ON" : "OFF"}`,
    `--CDLLAMA_OCI_TOOLS=${tools ? "ON" : "OFF"}`,
  ];
  console.error(`llama-oci: building the native addon (backend ${gpu}${tools ? ", with llama.cpp tools" : ""}, ${jobs} jobs)`);
  run(process.execPath, [cmakeJs, "build", "--directory", packageRoot, "--out", buildDir, "--config", "Release", "--parallel", jobs, ...defines]);
  if (tools) {
    run("cmake", ["--build", buildDir, "--config", "Release", "--parallel", jobs, "--target", ...TOOL_TARGETS]);
  }
  if (!existsSync(addonPath)) throw new Error(`the build finished but ${relative(packageRoot, addonPath)} is missing`);
  mkdirSync(buildDir, { recursive: true });
  writeFileSync(stampPath, stamp);
  console.error(`llama-oci: native addon built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

export function toolPath(name) {
  const exe = process.platform === "win32" ? `${name}.exe` : name;
  for (const candidate of [join(buildDir, "bin", exe), join(buildDir, "bin", "Release", exe)]) {
    if (existsSync(candidate)) return candidate;
  }
  return join(buildDir, "bin", exe);
}

/** A digest of everything that goes into the build: our sources, the llama.cpp version, the options. */
function buildStamp({ sourceDir, gpu, native, amx, tools }) {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ gpu, native, amx, tools, platform: process.platform, arch: process.arch, sourceDir }));
  const sourceStamp = join(sourceDir, ".llama-oci-source");
  hash.update(existsSync(sourceStamp) ? readFileSync(sourceStamp) : gitHead(sourceDir));
  for (const file of [
    "CMakeLists.txt",
    ...listFiles("cmake"),
    ...listFiles("native"),
    ...(tools ? listFiles("test/oracles") : []),
  ]) {
    hash.update(file);
    hash.update(readFileSync(join(packageRoot, file)));
  }
  return hash.digest("hex");
}

function listFiles(dir) {
  const full = join(packageRoot, dir);
  if (!existsSync(full)) return [];
  return readdirSync(full)
    .filter((name) => statSync(join(full, name)).isFile())
    .sort()
    .map((name) => `${dir}/${name}`);
}

function gitHead(dir) {
  try {
    return execFileSync("git", ["-C", dir, "rev-parse", "HEAD"], { encoding: "utf8" });
  } catch {
    return dir;
  }
}

function requireCommand(command, message) {
  const probe = spawnSync(command, ["--version"], { stdio: "ignore", shell: process.platform === "win32" });
  if (probe.error || probe.status !== 0) throw new Error(message);
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: packageRoot, stdio: "inherit" });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${command} ${args[0] ?? ""} failed with exit code ${result.status} (see the output above)`);
}

// Run as a script (npm's install hook, npm run), not imported: compare real paths, not a file:// string, which
// differs from the URL as soon as the path needs escaping (a space, "%", "#") and would skip the build silently.
if (isMainModule(import.meta.url)) {
  if (process.argv.includes("--check-main")) {
    // For the tests: proves the main-module check passed from where the script lies, and does nothing else.
    console.log("build-native.mjs: main module");
    process.exit(0);
  }
  try {
    main();
  } catch (error) {
    console.error(`llama-oci: error: ${error.message}`);
    process.exit(1);
  }
}
