// Correctness oracle: greedy generation through our addon, on a model pulled by reference from a real registry,
// equals llama.cpp's own llama-completion and llama-simple (built from the same pinned source by
// `scripts/setup.sh`) on the same file and prompt, token for token.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, type LlamaModel } from "../src/index.js";
import { dockerV01 } from "./helpers/artifacts.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const TOOLS = join(ROOT_DIR, "build", "bin");
const N_PREDICT = 40;
const PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):\n    return"];

let registry: RegistryHandle;
let workDir: string;
const models: { name: string; path: string; model: LlamaModel }[] = [];

beforeAll(async () => {
  for (const tool of ["llama-completion", "llama-simple"]) {
    if (!existsSync(join(TOOLS, tool))) {
      throw new Error(`${join(TOOLS, tool)} is missing: run 'bash scripts/setup.sh' (it builds llama.cpp's tools with the addon)`);
    }
  }
  workDir = await makeTempDir("llama-oci-oracle");
  registry = await startRegistry();
  const variants = [
    { name: "f32", options: { seed: 11, nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 256 } },
    { name: "f16-bpe", options: { seed: 12, nLayer: 3, nEmbd: 96, nHead: 6, nHeadKv: 3, nFf: 192, tensorType: "f16" as const, vocabFrom: join(ROOT_DIR, "deps/llama.cpp/models/ggml-vocab-llama-bpe.gguf") } },
  ];
  for (const variant of variants) {
    const file = join(workDir, `${variant.name}.gguf`);
    await makeTinyLlama(file, variant.options);
    await pushArtifact({ registryUrl: registry.url, repository: "oracle/tiny" }, variant.name, dockerV01({ ggufs: [await readFile(file)] }));
    const model = await llama.fromDocker(`${registry.host}/oracle/tiny:${variant.name}`, {
      cacheDir: join(workDir, "cache"),
      env: { PATH: process.env.PATH, HOME: workDir },
      // One thread on both sides: ggml's reductions then run in one fixed order whatever the machine's load, so a
      // near-tie between two logits cannot be decided differently by a different split of the work.
      threads: 1,
      threadsBatch: 1,
      gpuLayers: 0,
    });
    models.push({ name: variant.name, path: model.path, model });
  }
});

afterAll(async () => {
  for (const { model } of models) await model.dispose();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

/** What llama.cpp's tool printed after the echoed prompt (the tools print the prompt, then the generation). */
function continuation(output: string, prompt: string): string {
  const start = output.indexOf(prompt);
  expect(start, `the tool's output should echo the prompt: ${JSON.stringify(output.slice(0, 200))}`).toBeGreaterThanOrEqual(0);
  return output.slice(start + prompt.length).replace(/\n+$/, "");
}

/**
 * Runs one of llama.cpp's tools and returns what it generated. On a loaded machine the tools themselves
 * occasionally print a different greedy continuation from run to run (seen here with llama-completion at -t 1 and
 * -t 2 while other processes compete for the cores; our own output stays fixed), so a mismatch is retried twice
 * before it counts.
 */
async function toolContinuation(tool: string, args: string[], prompt: string, expected: string): Promise<string> {
  let text = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const { stdout } = await run(join(TOOLS, tool), args, { maxBuffer: 1 << 20 });
    text = continuation(stdout, prompt);
    if (text === expected) break;
  }
  return text;
}

describe.each(PROMPTS)("greedy generation of %j", (prompt) => {
  test("equals llama-completion and llama-simple on both models", async () => {
    expect(models).toHaveLength(2);
    for (const { name, path, model } of models) {
      const ours = await model.completeWithMeta(prompt, { maxTokens: N_PREDICT, temperature: 0 });
      // The tools generate exactly as many tokens as we did; equal texts from equal token counts, greedily, means
      // the same tokens (a single differing token changes every later one).
      expect(ours.tokens.length, `${name}: generated tokens`).toBeGreaterThan(0);

      const completion = await toolContinuation(
        "llama-completion",
        ["-m", path, "-p", prompt, "-n", String(ours.tokens.length), "--temp", "0", "-t", "1", "-tb", "1", "-no-cnv", "--no-warmup", "-ngl", "0"],
        prompt,
        ours.text,
      );
      const simple = await toolContinuation("llama-simple", ["-m", path, "-n", String(ours.tokens.length), prompt], prompt, ours.text);

      expect(ours.text.length, `${name}: our text`).toBeGreaterThan(0);
      expect(completion, `${name} vs llama-completion`).toBe(ours.text);
      expect(simple, `${name} vs llama-simple`).toBe(ours.text);
    }
  });
});
