/**
 * A quantized model evaluating batched prompts, in a child process, on this machine's CPU: the kernels ggml picks
 * for Q4_0 and Q8_0 matrices over many rows at once are the ones a native build may get wrong for the CPU (ggml's
 * Intel AMX kernels in the pinned llama.cpp die on their first tile instruction, see cmake/amx.cmake), and the tiny
 * F32/F16 models of the other tests never reach them. The model is the tiny llama with widths that ggml's tiled
 * kernels take (multiples of 32), quantized by llama.cpp's own llama-quantize. A crash shows as the child's signal.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ROOT_DIR } from "./helpers/cli.js";
import { makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const QUANTIZE = join(ROOT_DIR, "build", "bin", "llama-quantize");
const LIBRARY = pathToFileURL(join(ROOT_DIR, "dist", "esm", "index.js")).href;

// Four requests at once on a context of four sequences (one batch of 4 x ~150 prompt tokens), then one alone: each
// prints what it generated and its token counts.
const CHILD = `
const { llama } = await import(process.env.LIBRARY);
const model = await llama.loadModel(process.env.MODEL, { gpuLayers: 0, contextSize: 1024, parallel: 4, threads: 2 });
const prompt = (i) => Array.from({ length: 60 }, (_, j) => "word" + ((i * 7 + j) % 23)).join(" ");
const options = { maxTokens: 8, temperature: 0, ignoreEos: true };
const together = await Promise.all([0, 1, 2, 3].map((i) => model.completeWithMeta(prompt(i), options)));
const alone = await model.completeWithMeta(prompt(2), options);
console.log(JSON.stringify({
  together: together.map((r) => ({ text: r.text, prompt: r.timings.promptTokens, generated: r.timings.generatedTokens })),
  alone: { text: alone.text, prompt: alone.timings.promptTokens, generated: alone.timings.generatedTokens },
}));
await model.dispose();
`;

interface Outcome {
  text: string;
  prompt: number;
  generated: number;
}

let dir: string;

beforeAll(async () => {
  if (!existsSync(QUANTIZE)) throw new Error(`${QUANTIZE} is missing: run 'bash scripts/setup.sh' (it builds llama.cpp's tools with the addon)`);
  dir = await makeTempDir("llama-oci-quantized-batch");
});

afterAll(() => removeDir(dir));

describe.each(["Q4_0", "Q8_0"])("a %s model", (type) => {
  test("evaluates four batched prompts at once, then one alone, and generates from each", { timeout: 120_000 }, async () => {
    const f16 = join(dir, `tiny-${type}-f16.gguf`);
    const quantized = join(dir, `tiny-${type}.gguf`);
    await makeTinyLlama(f16, { nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 256, contextLength: 1024, tensorType: "f16", seed: 11 });
    await run(QUANTIZE, [f16, quantized, type], { maxBuffer: 1 << 22 });

    const child = await run(process.execPath, ["--input-type=module", "-e", CHILD], {
      env: { ...process.env, LIBRARY, MODEL: quantized },
      timeout: 100_000,
      maxBuffer: 1 << 20,
    }).catch((error: { code?: number; signal?: string; stderr?: string }) => {
      throw new Error(`the child died (exit ${error.code ?? "none"}, signal ${error.signal ?? "none"}): ${(error.stderr ?? "").slice(-2000)}`);
    });
    const result = JSON.parse(child.stdout.trim().split("\n").at(-1)!) as { together: Outcome[]; alone: Outcome };
    for (const outcome of result.together) {
      expect(outcome.prompt).toBeGreaterThan(100);
      expect(outcome.generated).toBe(8);
      expect(outcome.text.length).toBeGreaterThan(0);
    }
    expect(result.alone.prompt).toBe(result.together[2]!.prompt);
    expect(result.alone.generated).toBe(8);
  });
});
