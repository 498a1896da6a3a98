#!/usr/bin/env node
// llama-bench's two measurements through node-llama-cpp's public API, as close as that API allows:
//   pp<N>: a context of N tokens (batchSize 512 = llama-bench's n_ubatch; n_batch does not matter for N <= 512),
//          N random tokens evaluated with sequence.evaluateWithoutGeneratingNewTokens() from an empty sequence.
//   tg<N>: a context of N tokens, sequence.evaluate([random token], { temperature: 0 }) iterated until N tokens
//          came out: N single-token decodes, each followed by node-llama-cpp's greedy sampling (llama-bench decodes
//          random tokens and samples nothing; greedy over the logits is a few microseconds next to a decode).
// One warm-up run per test like llama-bench, clearHistory() before every run (llama-bench clears the KV cache),
// threads pinned with { ideal: T, min: T }, flash attention "auto" (llama-bench's default), CPU only.
// Prints one JSON object: { binary, pp: samples_ns[], tg: samples_ns[] }.
//
//   node bench/inference/nlc-bench.mjs <model.gguf> <threads> <nPrompt> <nGen> <repetitions> <vocabSize>
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, threadsArg, promptArg, genArg, repsArg, vocabArg] = process.argv.slice(2);
const threads = Number(threadsArg);
const nPrompt = Number(promptArg);
const nGen = Number(genArg);
const repetitions = Number(repsArg);
const vocabSize = Number(vocabArg);

// build "never": only the npm prebuilt binary (or an earlier local build); never a download or a compile mid-run.
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
let seed = 1;
const randomToken = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed % vocabSize;
};

async function withSequence(contextSize, body) {
  const context = await model.createContext({
    contextSize,
    batchSize: 512,
    threads: { ideal: threads, min: threads },
    flashAttention: "auto",
    sequences: 1,
  });
  try {
    return await body(context.getSequence());
  } finally {
    await context.dispose();
  }
}

async function promptSamples() {
  return withSequence(nPrompt, async (sequence) => {
    const run = async () => {
      await sequence.clearHistory();
      const tokens = Array.from({ length: nPrompt }, randomToken);
      const start = process.hrtime.bigint();
      await sequence.evaluateWithoutGeneratingNewTokens(tokens);
      return Number(process.hrtime.bigint() - start);
    };
    await run();
    const samples = [];
    for (let i = 0; i < repetitions; i++) samples.push(await run());
    return samples;
  });
}

async function generationSamples() {
  return withSequence(nGen, async (sequence) => {
    const run = async (count) => {
      await sequence.clearHistory();
      const start = process.hrtime.bigint();
      let produced = 0;
      for await (const token of sequence.evaluate([randomToken()], { temperature: 0 })) {
        void token;
        if (++produced >= count) break;
      }
      const elapsed = Number(process.hrtime.bigint() - start);
      if (produced !== count) throw new Error(`node-llama-cpp stopped after ${produced} of ${count} tokens`);
      return elapsed;
    };
    await run(1);
    const samples = [];
    for (let i = 0; i < repetitions; i++) samples.push(await run(nGen));
    return samples;
  });
}

try {
  const pp = nPrompt > 0 ? await promptSamples() : [];
  const tg = nGen > 0 ? await generationSamples() : [];
  const binary = { buildType: llama.buildType, llamaCppRelease: llama.llamaCppRelease.release, gpu: llama.gpu, cpuMathCores: llama.cpuMathCores };
  process.stdout.write(`${JSON.stringify({ binary, pp, tg })}\n`);
} finally {
  await model.dispose();
  await llama.dispose();
}
