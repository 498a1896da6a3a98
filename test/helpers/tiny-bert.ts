/**
 * A tiny BERT-architecture GGUF (random weights, a WordPiece vocabulary from writeTinyVocab): the kind of model
 * llama.cpp runs without a KV cache and with non-causal attention, which embeds but cannot generate.
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
}

export async function makeTinyBert(path: string, options: TinyBertOptions): Promise<void> {
  const { nEmbd = 16, nHead = 2, nLayer = 1, nFf = 32, contextLength = 64 } = options;
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
    .addMetadata(`${arch}.pooling_type`, GgufValueType.UINT32, 1)
    .addMetadata("tokenizer.ggml.token_type_count", GgufValueType.UINT32, 2);
  for (const [key, entry] of vocab.metadata) {
    if (key.startsWith("tokenizer.") && key !== "tokenizer.ggml.token_type_count") writer.addMetadata(key, entry.type, entry.value);
  }
  const add = (name: string, shape: number[], center = 0) => {
    writer.addTensor(name, shape, GgmlType.F32, randomWeights(7, name, shape.reduce((a, b) => a * b, 1), center));
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
  await writer.write(path);
}
