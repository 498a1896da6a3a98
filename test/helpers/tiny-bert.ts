/**
 * A tiny BERT-architecture GGUF (random weights, a WordPiece vocabulary from writeTinyVocab): the kind of model
 * llama.cpp runs without a KV cache and with non-causal attention, which embeds but cannot generate. With
 * `reranker`, a cross-encoder: rank pooling and a classifier head (cls, cls.output), as bge-reranker's GGUFs have.
 */
import { readGgufHeader } from "../../src/gguf/reader.js";
import { GgmlType, GgufValueType } from "../../src/gguf/types.js";
import { GgufWriter } from "../../src/gguf/writer.js";
import { randomWeights } from "../../src/testing/tiny-llama.js";

export interface TinyBertOptions {
  /** A vocabulary GGUF whose tokenizer.* keys are copied (a "bert" one, see writeTinyVocab). */
  vocabFrom: string;
  nEmbd?: number;
  nHead?: number;
  nLayer?: number;
  nFf?: number;
  contextLength?: number;
  /** Rank pooling and a classifier head with this many outputs (1 for a reranker's single score). */
  reranker?: { outputs?: number };
  /** Extra tokenizer booleans, e.g. { "tokenizer.ggml.add_eos_token": true }. */
  tokenizerFlags?: Record<string, boolean>;
  /** Extra tokenizer ids (uint32), e.g. { "tokenizer.ggml.eos_token_id": 3 }. */
  tokenizerIds?: Record<string, number>;
  /** tokenizer.chat_template.rerank: the reranker's input with {query} and {document}. */
  rerankTemplate?: string;
  /** Seeds the weights (default 7). */
  seed?: number;
}

export async function makeTinyBert(path: string, options: TinyBertOptions): Promise<void> {
  const { nEmbd = 16, nHead = 2, nLayer = 1, nFf = 32, contextLength = 64, seed = 7 } = options;
  const vocab = await readGgufHeader(options.vocabFrom);
  const tokens = vocab.metadata.get("tokenizer.ggml.tokens");
  if (tokens?.type !== GgufValueType.ARRAY) throw new Error(`${options.vocabFrom} has no tokens`);
  const arch = "bert";
  const writer = new GgufWriter()
    .addMetadata("general.architecture", GgufValueType.STRING, arch)
    .addMetadata("general.name", GgufValueType.STRING, "tiny-bert")
    .addMetadata(`${arch}.context_length`, GgufValueType.UINT32, contextLength)
    .addMetadata(`${arch}.embedding_length`, GgufValueType.UINT32, nEmbd)
    .addMetadata(`${arch}.block_count`, GgufValueType.UINT32, nLayer)
    .addMetadata(`${arch}.feed_forward_length`, GgufValueType.UINT32, nFf)
    .addMetadata(`${arch}.attention.head_count`, GgufValueType.UINT32, nHead)
    .addMetadata(`${arch}.attention.layer_norm_epsilon`, GgufValueType.FLOAT32, 1e-12)
    .addMetadata(`${arch}.attention.causal`, GgufValueType.BOOL, false)
    // llama.cpp's LLAMA_POOLING_TYPE_MEAN (1) or _RANK (4).
    .addMetadata(`${arch}.pooling_type`, GgufValueType.UINT32, options.reranker ? 4 : 1)
    .addMetadata("tokenizer.ggml.token_type_count", GgufValueType.UINT32, 2);
  const own = new Set([...Object.keys(options.tokenizerFlags ?? {}), ...Object.keys(options.tokenizerIds ?? {})]);
  for (const [key, entry] of vocab.metadata) {
    if (key.startsWith("tokenizer.") && key !== "tokenizer.ggml.token_type_count" && !own.has(key)) writer.addMetadata(key, entry.type, entry.value);
  }
  for (const [key, value] of Object.entries(options.tokenizerFlags ?? {})) writer.addMetadata(key, GgufValueType.BOOL, value);
  for (const [key, value] of Object.entries(options.tokenizerIds ?? {})) writer.addMetadata(key, GgufValueType.UINT32, value);
  if (options.rerankTemplate !== undefined) writer.addMetadata("tokenizer.chat_template.rerank", GgufValueType.STRING, options.rerankTemplate);
  const add = (name: string, shape: number[], center = 0, scale = 1) => {
    const values = randomWeights(seed, name, shape.reduce((a, b) => a * b, 1), center);
    if (scale !== 1) for (let i = 0; i < values.length; i++) values[i]! *= scale;
    writer.addTensor(name, shape, GgmlType.F32, values);
  };
  add("token_embd.weight", [nEmbd, tokens.value.length]);
  add("token_types.weight", [nEmbd, 2]);
  add("position_embd.weight", [nEmbd, contextLength]);
  add("token_embd_norm.weight", [nEmbd], 1);
  add("token_embd_norm.bias", [nEmbd]);
  for (let i = 0; i < nLayer; i++) {
    for (const part of ["q", "k", "v"]) add(`blk.${i}.attn_${part}.weight`, [nEmbd, nEmbd]);
    add(`blk.${i}.attn_output.weight`, [nEmbd, nEmbd]);
    add(`blk.${i}.attn_output_norm.weight`, [nEmbd], 1);
    add(`blk.${i}.attn_output_norm.bias`, [nEmbd]);
    add(`blk.${i}.ffn_up.weight`, [nEmbd, nFf]);
    add(`blk.${i}.ffn_down.weight`, [nFf, nEmbd]);
    add(`blk.${i}.layer_output_norm.weight`, [nEmbd], 1);
    add(`blk.${i}.layer_output_norm.bias`, [nEmbd]);
  }
  if (options.reranker) {
    // RoBERTa's classification head: dense + tanh, then the projection to the scores.
    const outputs = options.reranker.outputs ?? 1;
    // Larger than the other weights, so that the scores of different pairs spread out instead of all being ~0.
    add("cls.weight", [nEmbd, nEmbd], 0, 25);
    add("cls.bias", [nEmbd]);
    add("cls.output.weight", [nEmbd, outputs], 0, 25);
    add("cls.output.bias", [outputs]);
  }
  await writer.write(path);
}
