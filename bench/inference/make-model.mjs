#!/usr/bin/env node
// The benchmark model: SmolLM2-135M's shape (llama, 30 layers, 576 embedding, 9 heads, 3 KV heads, 1536 FFN, tied
// embeddings, StarCoder's 49152-token vocab) with seeded random weights written as F16, then quantized to Q4_0 by
// llama.cpp's own llama-quantize from the pinned source. Cached in bench/inference/work/; speed depends on the
// shape and the quantization only, not on the weights' values.
//
//   node bench/inference/make-model.mjs        prints the path of the Q4_0 model, building it when missing
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, "..", "..");
export const workDir = join(here, "work");
const MODEL_NAME = "smollm2-135m-shaped-random";
/** Bump when the shape or the generator changes, so a stale cached file is not reused. */
const MODEL_VERSION = 1;

export const SMOLLM2_135M_SHAPE = {
  nLayer: 30,
  nEmbd: 576,
  nHead: 9,
  nHeadKv: 3,
  nFf: 1536,
  contextLength: 8192,
  tieEmbeddings: true,
};

export function quantizeTool() {
  return join(root, "build", "bin", "llama-quantize");
}

/** Path of the cached Q4_0 model; generates and quantizes it first when it is not there. */
export async function ensureBenchModel({ log = (line) => process.stderr.write(`${line}\n`) } = {}) {
  const q4 = join(workDir, `${MODEL_NAME}-v${MODEL_VERSION}-Q4_0.gguf`);
  if (existsSync(q4)) return q4;
  const quantize = quantizeTool();
  if (!existsSync(quantize)) {
    throw new Error(`${quantize} is missing: build llama.cpp's tools with 'LLAMA_OCI_BUILD_TOOLS=1 npm run build:native' (or 'node scripts/build-native.mjs --tools')`);
  }
  const generator = join(root, "dist", "esm", "testing", "tiny-llama.js");
  if (!existsSync(generator)) execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" });
  const { makeTinyLlama, LLAMA_CPP_SOURCE_DIR } = await import(generator);

  mkdirSync(workDir, { recursive: true });
  const f16 = join(workDir, `${MODEL_NAME}-v${MODEL_VERSION}-F16.gguf`);
  let started = Date.now();
  await makeTinyLlama(f16, {
    ...SMOLLM2_135M_SHAPE,
    vocabFrom: join(LLAMA_CPP_SOURCE_DIR, "models", "ggml-vocab-starcoder.gguf"),
    tensorType: "f16",
    seed: 135,
    name: "SmolLM2-135M-shaped (random weights)",
  });
  log(`bench: wrote the F16 model in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  started = Date.now();
  const partial = `${q4}.partial`;
  execFileSync(quantize, [f16, partial, "Q4_0", String(availableParallelism())], { stdio: ["ignore", "ignore", "pipe"] });
  renameSync(partial, q4);
  rmSync(f16);
  log(`bench: quantized it to Q4_0 with llama-quantize in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return q4;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(await ensureBenchModel());
}
