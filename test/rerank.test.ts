// Reranking with a generated cross-encoder (a tiny BERT with rank pooling and a classifier head, as bge-reranker's
// GGUFs are): model.rerank() formats the query and each document as llama-server does, and its scores are the
// classifier's raw outputs (not L2-normalised to ±1), equal to llama.cpp's own llama-embedding --pooling rank on the
// same pairs; then the server's /v1/rerank (Jina's shape) and /rerank with `texts` (TEI's shape).
import { execFile, execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, serve, type LlamaModel, type LlamaServer } from "../src/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { makeTinyBert } from "./helpers/tiny-bert.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { WPM_TOKENS, writeTinyVocab } from "./helpers/tiny-vocab.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const TOOL = join(ROOT_DIR, "build", "bin", "llama-embedding");
const QUERY = "what is a llama";
const DOCUMENTS = ["a llama is a time", "hello", "the llamas once upon a time", "hi, once upon a time the llama!", "d e f"];
// [CLS] 2 and [SEP] 3 of WPM_TOKENS; EOS is SEP and is added at the end, so a pair reads [CLS] q [SEP] d [SEP]
// (BERT's own pair layout) both as llama-server builds it and as llama-embedding tokenizes "q\td".
const IDS = {
  "tokenizer.ggml.padding_token_id": 0,
  "tokenizer.ggml.unknown_token_id": 1,
  "tokenizer.ggml.bos_token_id": 2,
  "tokenizer.ggml.seperator_token_id": 3,
  "tokenizer.ggml.eos_token_id": 3,
  "tokenizer.ggml.mask_token_id": 4,
};
const FLAGS = { "tokenizer.ggml.add_bos_token": true, "tokenizer.ggml.add_eos_token": true, "tokenizer.ggml.add_sep_token": false };

let workDir: string;
let rerankerPath: string;
let swappedPath: string;
let embedderPath: string;
let llamaPath: string;
let reranker: LlamaModel;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-rerank");
  const vocab = join(workDir, "wpm.gguf");
  await writeTinyVocab(vocab, { model: "bert", ids: IDS });
  rerankerPath = join(workDir, "reranker.gguf");
  await makeTinyBert(rerankerPath, { vocabFrom: vocab, nEmbd: 32, nHead: 4, nLayer: 2, nFf: 64, reranker: {}, tokenizerFlags: FLAGS, seed: 9 });
  // The same weights with a rerank template that puts the document first.
  swappedPath = join(workDir, "swapped.gguf");
  await makeTinyBert(swappedPath, { vocabFrom: vocab, nEmbd: 32, nHead: 4, nLayer: 2, nFf: 64, reranker: {}, tokenizerFlags: FLAGS, seed: 9, rerankTemplate: "[CLS]{document}[SEP]{query}[SEP]" });
  embedderPath = join(workDir, "embedder.gguf");
  await makeTinyBert(embedderPath, { vocabFrom: vocab });
  llamaPath = join(workDir, "llama.gguf");
  await makeTinyLlama(llamaPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 3 });
  reranker = await llama.loadModel(rerankerPath, { gpuLayers: 0, threads: 1 });
});

afterAll(async () => {
  await reranker?.dispose();
  if (workDir) await removeDir(workDir);
});

/** llama.cpp's llama-embedding (built from the same tree on first use) on `pairs`: the first output of each. */
async function llamaEmbeddingScores(path: string, pairs: [string, string][]): Promise<number[]> {
  if (!existsSync(TOOL) && readFileSync(join(ROOT_DIR, "build", "build.ninja"), "utf8").includes("build bin/llama-embedding:")) {
    execFileSync("cmake", ["--build", join(ROOT_DIR, "build"), "--target", "llama-embedding"], { stdio: "ignore" });
  }
  expect(existsSync(TOOL), `${TOOL} is missing: build it with cmake --build build --target llama-embedding`).toBe(true);
  const prompt = pairs.map(([q, d]) => `${q}\t${d}`).join("\n");
  // llama-embedding prints through llama.cpp's asynchronous log and may exit before all of it is written (its
  // output is then cut short, never different): it runs again until one whole array of `pairs.length` rows came.
  let last = "";
  for (let attempt = 0; attempt < 6; attempt++) {
    const { stdout } = await run(
      TOOL,
      // (a context of 64, the model's own, makes llama-embedding assert on its outputs buffer with 5 pairs at once)
      ["-m", path, "-p", prompt, "--pooling", "rank", "--embd-normalize", "-1", "--embd-output-format", "array", "-c", "512", "-b", "512", "-ub", "512", "-t", "1", "-ngl", "0"],
      { maxBuffer: 1 << 20 },
    );
    last = stdout;
    // Each row is n_embd values of which the first n_cls_out (1) are the scores; the tool prints the rest of its
    // buffer too (uninitialised: huge numbers, "-nan"), so only the first value of each row is read.
    const start = stdout.indexOf("[[");
    const end = stdout.indexOf("]]", start);
    if (start === -1 || end === -1) continue;
    const rows = stdout.slice(start + 2, end).split(/\]\s*,\s*\[/);
    if (rows.length === pairs.length) return rows.map((row) => Number(row.split(",")[0]!.trim()));
  }
  throw new Error(`llama-embedding printed no whole array of ${pairs.length} rows: ${last.slice(0, 500)}`);
}

describe("model.rerank()", () => {
  test("scores are the classifier's raw outputs, equal to llama-embedding --pooling rank, best first", async () => {
    const results = await reranker.rerank(QUERY, DOCUMENTS);
    expect(results.map((r) => r.index).sort()).toEqual([0, 1, 2, 3, 4]);
    for (const r of results) expect(r.document).toBe(DOCUMENTS[r.index]);
    const scores = results.map((r) => r.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    // Not the ±1 an L2-normalised one-value vector collapses to, and not all the same.
    for (const s of scores) expect(Math.abs(Math.abs(s) - 1)).toBeGreaterThan(1e-3);
    expect(new Set(scores.map((s) => s.toFixed(5))).size).toBe(DOCUMENTS.length);

    const theirs = await llamaEmbeddingScores(rerankerPath, DOCUMENTS.map((d) => [QUERY, d]));
    for (const r of results) expect(r.score, `document ${r.index}`).toBeCloseTo(theirs[r.index]!, 4);
  });

  test("the input is [CLS] query [SEP] document [SEP]; topN keeps the best; embed() gives the raw score too", async () => {
    const tokens = await reranker.rerankPrompt(QUERY, DOCUMENTS[0]!);
    const q = await reranker.tokenize(QUERY, { addSpecial: false });
    const d = await reranker.tokenize(DOCUMENTS[0]!, { addSpecial: false });
    expect([...tokens]).toEqual([2, ...q, 3, ...d, 3]);
    expect(WPM_TOKENS[2]).toBe("[CLS]");

    const all = await reranker.rerank(QUERY, DOCUMENTS);
    const top = await reranker.rerank(QUERY, DOCUMENTS, { topN: 2 });
    expect(top).toEqual(all.slice(0, 2));
    expect(await reranker.rerank(QUERY, [])).toEqual([]);

    const vector = await reranker.embed(`${QUERY}[SEP]${DOCUMENTS[0]!}`);
    const score = all.find((r) => r.index === 0)!.score;
    expect(vector[0]).toBeCloseTo(score, 5);
  });

  test("a model's rerank template (tokenizer.chat_template.rerank) is how its pairs are written", async () => {
    const swapped = await llama.loadModel(swappedPath, { gpuLayers: 0, threads: 1 });
    try {
      const viaTemplate = await swapped.rerank(QUERY, DOCUMENTS.slice(0, 3));
      for (const r of viaTemplate) {
        const [plain] = await reranker.rerank(r.document, [QUERY]);
        expect(r.score).toBeCloseTo(plain!.score, 5);
      }
    } finally {
      await swapped.dispose();
    }
  });

  test("a model that is not a reranker is refused with a clear error", async () => {
    for (const path of [embedderPath, llamaPath]) {
      const model = await llama.loadModel(path, { gpuLayers: 0, threads: 1 });
      try {
        const error = await model.rerank(QUERY, DOCUMENTS).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(LlamaOciError);
        expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
        expect((error as LlamaOciError).message).toMatch(/this model cannot rerank: it is not a reranker \(its GGUF's \w+\.pooling_type is (1|not set), not 4 = rank\)/);
      } finally {
        await model.dispose();
      }
    }
    await expect(reranker.rerank(QUERY, DOCUMENTS, { topN: -1 })).rejects.toThrow(/topN must be an integer >= 0/);
    await expect(reranker.rerank(QUERY, ["a ".repeat(200)])).rejects.toThrow(/the query and document 0 are \d+ tokens but the reranker takes at most 64/);
  });
});

describe("the server's rerank endpoints", () => {
  let server: LlamaServer;

  beforeAll(async () => {
    server = await serve({ port: 0, models: [rerankerPath, llamaPath], threads: 1, parallel: 1 });
    await server.ready;
  });

  afterAll(async () => {
    await server?.close();
  });

  const post = async (path: string, body: object) => {
    const response = await fetch(`${server.url}${path}`, { method: "POST", body: JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> & unknown[] };
  };

  test("/v1/rerank answers Jina's shape with the library's scores, best first, top_n of them", async () => {
    const expected = await reranker.rerank(QUERY, DOCUMENTS);
    const { status, body } = await post("/v1/rerank", { model: "reranker", query: QUERY, documents: DOCUMENTS, top_n: 3, return_documents: true });
    expect(status).toBe(200);
    expect(body.object).toBe("list");
    expect(body.model).toBe("reranker");
    const results = body.results as { index: number; relevance_score: number; document: { text: string } }[];
    expect(results.map((r) => r.index)).toEqual(expected.slice(0, 3).map((r) => r.index));
    results.forEach((r, i) => {
      expect(r.relevance_score).toBeCloseTo(expected[i]!.score, 5);
      expect(r.document.text).toBe(DOCUMENTS[r.index]);
    });
    const usage = body.usage as { prompt_tokens: number };
    expect(usage.prompt_tokens).toBe(expected.reduce((sum, r) => sum + r.tokens, 0));

    // Jina's documents may be objects with text; /rerank is the same endpoint.
    const again = await post("/rerank", { query: QUERY, documents: DOCUMENTS.map((text) => ({ text })) });
    expect((again.body.results as { index: number }[]).map((r) => r.index)).toEqual(expected.map((r) => r.index));
  });

  test("`texts` gets TEI's answer: an array of { index, score }", async () => {
    const expected = await reranker.rerank(QUERY, DOCUMENTS);
    const { status, body } = await post("/rerank", { model: "reranker", query: QUERY, texts: DOCUMENTS, return_text: true });
    expect(status).toBe(200);
    expect(Array.isArray(body)).toBe(true);
    const results = body as unknown as { index: number; score: number; text: string }[];
    expect(results.map((r) => r.index)).toEqual(expected.map((r) => r.index));
    expect(results[0]!.score).toBeCloseTo(expected[0]!.score, 5);
    expect(results[0]!.text).toBe(DOCUMENTS[results[0]!.index]);
  });

  test("a model that is not a reranker, no documents or no query answer 400", async () => {
    const wrong = await post("/v1/rerank", { model: "llama", query: QUERY, documents: DOCUMENTS });
    expect(wrong.status).toBe(400);
    expect((wrong.body.error as { message: string }).message).toMatch(/llama cannot rerank: it is not a reranker/);
    const empty = await post("/v1/rerank", { model: "reranker", query: QUERY, documents: [] });
    expect(empty.status).toBe(400);
    expect((empty.body.error as { message: string }).message).toMatch(/documents must be a non-empty array/);
    const noQuery = await post("/v1/rerank", { model: "reranker", documents: DOCUMENTS });
    expect(noQuery.status).toBe(400);
    expect((noQuery.body.error as { message: string }).message).toMatch(/query is required/);
  });
});
