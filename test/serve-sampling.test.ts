// The samplers through the server (in-process serve() on a generated model): OpenAI's logit_bias and llama-server's
// sampler fields (dry_*, xtc_*, typical_p, top_n_sigma, mirostat*) in /v1, Ollama's option names in /api, each
// answer equal to the library's own seeded generation with the same options, and bad values answered with 400.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, serve, type GenerationOptions, type LlamaContext, type LlamaModel, type LlamaServer } from "../src/index.js";
import { SERVE_CHAT_TEMPLATE } from "./helpers/serve.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const PROMPT = "Once upon a time";

let workDir: string;
let model: LlamaModel;
let context: LlamaContext<LlamaModel>;
let server: LlamaServer;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-sampling");
  const path = join(workDir, "tiny.gguf");
  await makeTinyLlama(path, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 41, chatTemplate: SERVE_CHAT_TEMPLATE, contextLength: 512 });
  model = await llama.loadModel(path, { gpuLayers: 0, contextSize: 512, threads: 1 });
  context = await model.createContext();
  server = await serve({ port: 0, models: [path], threads: 1, parallel: 2, contextSize: 512 });
  await server.ready;
});

afterAll(async () => {
  await server?.close();
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

async function post(path: string, body: object): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${server.url}${path}`, { method: "POST", body: JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function expected(prompt: string | Int32Array, options: GenerationOptions): Promise<string> {
  return (await context.completeWithMeta(prompt, options)).text;
}

async function chatTokens(messages: { role: string; content: string }[]): Promise<Int32Array> {
  return model.tokenize(model.applyChatTemplate(messages, { addAssistantPrompt: true }), { addSpecial: true, parseSpecial: true });
}

describe("/v1", () => {
  test("llama-server's sampler fields in /v1/completions give the library's seeded generation", async () => {
    const cases: [object, GenerationOptions][] = [
      [{ typical_p: 0.8 }, { typicalP: 0.8 }],
      [{ top_n_sigma: 1.5, top_k: 0 }, { topNSigma: 1.5, topK: 0 }],
      [{ xtc_probability: 0.7, xtc_threshold: 0.02 }, { xtcProbability: 0.7, xtcThreshold: 0.02 }],
      [
        { dry_multiplier: 2, dry_base: 1.5, dry_allowed_length: 1, dry_penalty_last_n: -1, dry_sequence_breakers: ["\n"] },
        { dryMultiplier: 2, dryBase: 1.5, dryAllowedLength: 1, dryPenaltyLastN: -1, drySequenceBreakers: ["\n"] },
      ],
      [{ mirostat: 2, mirostat_tau: 3, mirostat_eta: 0.2 }, { mirostat: 2, mirostatTau: 3, mirostatEta: 0.2 }],
      [{ mirostat: 1 }, { mirostat: 1 }],
    ];
    for (const [fields, options] of cases) {
      const { status, body } = await post("/v1/completions", { prompt: PROMPT, max_tokens: 16, seed: 77, ...fields });
      expect(status, JSON.stringify(body)).toBe(200);
      const text = (body.choices as { text: string }[])[0]!.text;
      expect(text, JSON.stringify(fields)).toBe(await expected(PROMPT, { maxTokens: 16, seed: 77, ...options }));
    }
  });

  test("logit_bias in OpenAI's shape (token ids as keys) and llama-server's ([token or text, bias], false bans)", async () => {
    const messages = [{ role: "user", content: "Hello there" }];
    const tokens = await chatTokens(messages);
    const greedy = await context.completeWithMeta(tokens, { temperature: 0, maxTokens: 6 });
    const first = greedy.tokens[0]!;
    const banned = await post("/v1/chat/completions", { messages, temperature: 0, max_tokens: 6, logit_bias: { [String(first)]: -100 } });
    expect(banned.status).toBe(200);
    const content = (banned.body.choices as { message: { content: string } }[])[0]!.message.content;
    expect(content).toBe(await expected(tokens, { temperature: 0, maxTokens: 6, logitBias: { [first]: -100 } }));
    expect(content).not.toBe(greedy.text);

    const asPairs = await post("/v1/completions", { prompt: PROMPT, temperature: 0, max_tokens: 6, logit_bias: [["llama", 50], [first, false]] });
    expect(asPairs.status).toBe(200);
    expect((asPairs.body.choices as { text: string }[])[0]!.text).toBe(await expected(PROMPT, { temperature: 0, maxTokens: 6, logitBias: [["llama", 50], [first, false]] }));
  });

  test("bad values answer 400 naming the field", async () => {
    const bad: [object, RegExp][] = [
      [{ mirostat: 3 }, /mirostat must be <= 2/],
      [{ typical_p: 2 }, /typical_p must be <= 1/],
      [{ xtc_probability: -1 }, /xtc_probability must be >= 0/],
      [{ dry_sequence_breakers: [""] }, /dry_sequence_breakers\[0\]/],
      [{ logit_bias: { "99999999": 1 } }, /99999999 is not a token of this model/],
      [{ logit_bias: "x" }, /logit_bias must be an object of token ids to numbers, an array of \[token, bias\] pairs, or null/],
    ];
    for (const [fields, message] of bad) {
      const { status, body } = await post("/v1/completions", { prompt: PROMPT, max_tokens: 2, ...fields });
      expect(status, JSON.stringify(fields)).toBe(400);
      expect((body.error as { message: string }).message, JSON.stringify(fields)).toMatch(message);
    }
  });
});

describe("/api", () => {
  test("Ollama's option names (typical_p, mirostat, mirostat_tau, mirostat_eta) give the library's seeded generation", async () => {
    const options = { typical_p: 0.85, seed: 5, num_predict: 12 };
    const generated = await post("/api/generate", { prompt: PROMPT, raw: true, stream: false, options });
    expect(generated.status, JSON.stringify(generated.body)).toBe(200);
    expect(generated.body.response).toBe(await expected(PROMPT, { typicalP: 0.85, seed: 5, maxTokens: 12 }));

    const mirostat = await post("/api/generate", { prompt: PROMPT, raw: true, stream: false, options: { mirostat: 2, mirostat_tau: 4, mirostat_eta: 0.3, seed: 6, num_predict: 12 } });
    expect(mirostat.status).toBe(200);
    expect(mirostat.body.response).toBe(await expected(PROMPT, { mirostat: 2, mirostatTau: 4, mirostatEta: 0.3, seed: 6, maxTokens: 12 }));

    const messages = [{ role: "user", content: "Hi" }];
    const chat = await post("/api/chat", { messages, stream: false, options: { mirostat: 1, seed: 7, num_predict: 8, dry_multiplier: 0.5 } });
    expect(chat.status).toBe(200);
    expect((chat.body.message as { content: string }).content).toBe(await expected(await chatTokens(messages), { mirostat: 1, seed: 7, maxTokens: 8, dryMultiplier: 0.5 }));

    const wrong = await post("/api/generate", { prompt: PROMPT, stream: false, options: { mirostat: 5 } });
    expect(wrong.status).toBe(400);
    expect(wrong.body.error).toMatch(/options\.mirostat must be <= 2/);
  });
});
