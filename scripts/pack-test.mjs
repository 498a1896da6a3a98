#!/usr/bin/env node
// Tests llama-oci as a dependency, the way a user gets it: `npm pack`, check what the tarball holds, `npm install
// ./llama-oci-<version>.tgz` into an empty project (its install script compiles the addon there, from llama.cpp's
// source: LLAMA_CPP_DIR points at this checkout's deps/llama.cpp so nothing is downloaded twice, the compile is
// full), then an ES module and a CommonJS script in that project import the package, pull a tiny model from a local
// registry with llama.fromDocker and generate text. The project's path holds a space, "%" and "#", which npm
// accepts and which a file:// URL has to escape (the install script must still see itself as the main module and
// build). Before that, an install whose native build cannot succeed (LLAMA_CPP_DIR names no llama.cpp) must fail
// with the reason, not exit 0 without an addon. Exits non-zero with a message on the first failure.
//
//   node scripts/pack-test.mjs [--keep]     (--keep leaves the temp project for inspection)
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { missingRegistryMessage, pushGgufModel, registryAvailable, startLocalRegistry } from "./local-registry.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const keep = process.argv.includes("--keep");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const PROMPT = "Once upon a time";
/** The consumer project's folder name: characters a path may hold that a file:// URL escapes ("%41" stays as is). */
const PROJECT_DIR = "my project %41 #1";

/** Tarball paths that must be there (install and runtime), and prefixes that must not. */
const REQUIRED = [
  "package.json",
  "README.md",
  "bin/llama-oci.js",
  "dist/esm/index.js",
  "dist/esm/index.d.ts",
  "dist/esm/package.json",
  "dist/cjs/index.js",
  "dist/cjs/index.d.ts",
  "dist/cjs/package.json",
  "CMakeLists.txt",
  "cmake/backends.cmake",
  "native/addon.cpp",
  "scripts/build-native.mjs",
  "scripts/fetch-llama-cpp.mjs",
  "scripts/native-config.mjs",
];
const FORBIDDEN = ["build/", "deps/", "node_modules/", "test/", "src/", "bench/", ".ci/", "dist/esm/testing/", "dist/cjs/testing/"];

const started = Date.now();
const phases = [];
let phaseStart = Date.now();
function phase(name) {
  const now = Date.now();
  if (phases.length > 0) phases.at(-1).seconds = (now - phaseStart) / 1000;
  phases.push({ name, seconds: 0 });
  phaseStart = now;
  log(name);
}

function log(message) {
  process.stderr.write(`pack-test: ${message}\n`);
}

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

if (!registryAvailable()) {
  log(missingRegistryMessage);
  process.exit(1);
}
const llamaCppDir = process.env.LLAMA_CPP_DIR ?? join(root, "deps", "llama.cpp");
if (!existsSync(join(llamaCppDir, "include", "llama.h"))) {
  log(`no llama.cpp source at ${llamaCppDir}: run 'npm run fetch:llama.cpp' in the checkout first, or set LLAMA_CPP_DIR`);
  process.exit(1);
}

const work = mkdtempSync(join(tmpdir(), "llama-oci-pack-test-"));
let registry;
let exitCode = 0;
try {
  phase("compiling the TypeScript and packing");
  if (distIsStale()) run("npm", ["run", "build", "--silent"], { cwd: root });
  const packed = JSON.parse(run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: root, capture: true }))[0];
  const tarball = join(work, packed.filename);
  check(packed.filename === `${pkg.name}-${pkg.version}.tgz`, `npm pack wrote ${packed.filename}, expected ${pkg.name}-${pkg.version}.tgz`);
  const files = packed.files.map((file) => file.path);
  const missing = REQUIRED.filter((path) => !files.includes(path));
  check(missing.length === 0, `the tarball lacks ${missing.join(", ")} (package.json "files")`);
  const unwanted = files.filter((path) => FORBIDDEN.some((prefix) => path.startsWith(prefix)) || path.endsWith(".gguf") || path.endsWith(".node"));
  check(unwanted.length === 0, `the tarball holds files it must not: ${unwanted.slice(0, 10).join(", ")}${unwanted.length > 10 ? ", ..." : ""}`);
  log(`${packed.filename}: ${files.length} files, ${(packed.size / 1024).toFixed(0)} KiB packed, ${(packed.unpackedSize / 1024).toFixed(0)} KiB unpacked`);

  phase(`npm install ./${packed.filename} whose native build cannot succeed must fail with the reason`);
  const broken = join(work, `broken ${PROJECT_DIR}`);
  makeProject(broken);
  const missingSource = join(work, "no llama.cpp here");
  const failed = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--foreground-scripts", tarball], {
    cwd: broken,
    env: { ...process.env, LLAMA_CPP_DIR: missingSource, LLAMA_OCI_BUILD_TOOLS: "", LLAMA_OCI_SKIP_NATIVE_BUILD: "" },
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  const failedOutput = `${failed.stdout}${failed.stderr}`;
  check(failed.status !== 0, `npm install with LLAMA_CPP_DIR=${missingSource} exited 0; the install script did not run or hid its failure:\n${failedOutput.slice(-2000)}`);
  check(
    failedOutput.includes(`LLAMA_CPP_DIR=${missingSource} does not look like a llama.cpp checkout`),
    `npm install failed (exit ${failed.status}) without the build's reason:\n${failedOutput.slice(-2000)}`,
  );
  log(`failed as it should (exit ${failed.status}) and said why`);

  phase(`npm install ./${packed.filename} into an empty project at "${PROJECT_DIR}" (compiles llama.cpp and the addon; minutes)`);
  const project = join(work, PROJECT_DIR);
  makeProject(project);
  run("npm", ["install", "--no-audit", "--no-fund", "--foreground-scripts", tarball], {
    cwd: project,
    env: { ...process.env, LLAMA_CPP_DIR: llamaCppDir, LLAMA_OCI_BUILD_TOOLS: "", LLAMA_OCI_SKIP_NATIVE_BUILD: "" },
  });
  const installed = join(project, "node_modules", pkg.name);
  check(existsSync(join(installed, "build", "Release", "llama_oci.node")), `the install did not build ${relative(project, join(installed, "build", "Release", "llama_oci.node"))}`);

  phase("pushing a tiny model to a local registry");
  const { makeTinyLlama } = await import("../dist/esm/testing/tiny-llama.js");
  const modelPath = join(work, "tiny.gguf");
  await makeTinyLlama(modelPath, { seed: 5, contextLength: 256 });
  registry = await startLocalRegistry();
  await pushGgufModel(registry.url, "pack-test/tiny", "latest", modelPath, { quantization: "F32" });
  const reference = `${registry.host}/pack-test/tiny:latest`;

  phase("running an ES module and a CommonJS script in the project");
  writeFileSync(join(project, "esm-check.mjs"), consumerScript("esm"));
  writeFileSync(join(project, "cjs-check.cjs"), consumerScript("cjs"));
  const results = {};
  for (const [kind, script] of [["esm", "esm-check.mjs"], ["cjs", "cjs-check.cjs"]]) {
    const out = run(process.execPath, [script, reference, join(project, `model cache #${kind}`)], { cwd: project, capture: true, env: { ...process.env, LLAMA_CPP_DIR: "" } });
    const result = JSON.parse(out.trim().split("\n").at(-1));
    check(result.resolved.startsWith(installed), `${kind}: 'llama-oci' resolved to ${result.resolved}, not the installed package`);
    check(result.text.length > 0, `${kind}: llama.fromDocker(...).complete() returned no text`);
    check(result.pulledFrom === reference, `${kind}: model.pull.reference is ${result.pulledFrom}, expected ${reference}`);
    results[kind] = result;
    log(`${kind}: ${result.entry} -> ${JSON.stringify(result.text)} (${result.tokens} tokens)`);
  }
  check(results.esm.text === results.cjs.text, `greedy output differs: ESM ${JSON.stringify(results.esm.text)}, CJS ${JSON.stringify(results.cjs.text)}`);
  phase("done");
  log(`passed in ${((Date.now() - started) / 1000).toFixed(0)} s (${phases.slice(0, -1).map((p) => `${p.name.split(" (")[0]}: ${p.seconds.toFixed(0)} s`).join("; ")})`);
} catch (error) {
  exitCode = 1;
  log(`FAILED: ${error instanceof Failure ? error.message : error instanceof Error ? error.stack ?? error.message : String(error)}`);
} finally {
  await registry?.stop();
  if (keep) log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
process.exit(exitCode);

function makeProject(dir) {
  mkdirSync(dir);
  writeFileSync(join(dir, "package.json"), `${JSON.stringify({ name: "llama-oci-pack-test-project", version: "1.0.0", private: true }, null, 2)}\n`);
}

/** A script a user would write: the package's public entry point only. */
function consumerScript(kind) {
  const head =
    kind === "esm"
      ? `import { createRequire } from "node:module";\nimport { llama, pull } from "llama-oci";\nconst entry = "import";\nconst resolved = createRequire(import.meta.url).resolve("llama-oci");\n`
      : `const { llama, pull } = require("llama-oci");\nconst entry = "require";\nconst resolved = require.resolve("llama-oci");\n`;
  const body = `
async function main() {
  if (typeof pull !== "function" || typeof llama?.fromDocker !== "function") throw new Error("llama-oci exports no pull() or llama.fromDocker()");
  const [reference, cacheDir] = process.argv.slice(2);
  const model = await llama.fromDocker(reference, { cacheDir, gpuLayers: 0, contextSize: 256 });
  try {
    const result = await model.completeWithMeta(${JSON.stringify(PROMPT)}, { maxTokens: 8, temperature: 0 });
    console.log(JSON.stringify({ entry, resolved, text: result.text, tokens: result.timings?.generatedTokens ?? null, pulledFrom: model.pull?.reference }));
  } finally {
    await model.dispose();
  }
}
main().catch((error) => {
  console.error(error);
  process.exit(1);
});
`;
  return head + body;
}

function run(command, args, { cwd, env = process.env, capture = false }) {
  const result = spawnSync(command, args, { cwd, env, encoding: "utf8", stdio: ["ignore", capture ? "pipe" : "inherit", capture ? "pipe" : "inherit"], maxBuffer: 64 << 20 });
  if (result.error) throw new Failure(`${command} could not start: ${result.error.message}`);
  if (result.status !== 0) {
    throw new Failure(`'${command} ${args.join(" ")}' in ${cwd} exited with ${result.status ?? result.signal}${capture ? `:\n${result.stderr.slice(-4000)}` : ""}`);
  }
  return result.stdout;
}

/** dist/ is missing or older than a file under src/ (the same rule as test/global-setup.ts). */
function distIsStale() {
  const built = ["dist/esm/index.js", "dist/cjs/index.js"].map((path) => join(root, path));
  if (!built.every((path) => existsSync(path))) return true;
  const builtAt = Math.min(...built.map((path) => statSync(path).mtimeMs));
  const newest = (dir) =>
    readdirSync(dir, { withFileTypes: true }).reduce((max, entry) => {
      const path = join(dir, entry.name);
      return Math.max(max, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
    }, 0);
  return builtAt < newest(join(root, "src"));
}
