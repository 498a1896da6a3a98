/**
 * Tiny tokenizer-only GGUFs for makeTinyLlama's vocabFrom (and makeTinyBert): a few hundred tokens instead of a real
 * vocabulary's 32000 or more, so that models built on them load in milliseconds, and so that tests can build
 * vocabularies llama.cpp cannot handle (duplicate tokens, missing special tokens, no tokenizer at all).
 */
import { GgufValueType } from "../../src/gguf/types.js";
import { GgufWriter } from "../../src/gguf/writer.js";

/** tokenizer.ggml.token_type values (llama.cpp's LLAMA_TOKEN_TYPE_*). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then a few words: a SentencePiece ("llama") vocabulary. */
export const SPM_TOKENS: readonly string[] = [
  "<unk>",
  "<s>",
  "</s>",
  ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
  ..."▁ ▁the ▁a ▁llama ▁Once ▁upon ▁time e t a o n s ▁is ▁was ▁and ▁to ▁of".split(" "),
];

/** [PAD], [UNK], [CLS], [SEP], [MASK] and some lower-case words with WordPiece continuations: a "bert" vocabulary. */
export const WPM_TOKENS: readonly string[] = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  ..."a b c d e f g h i j k l m n o p q r s t u v w x y z . , ! ? hi hello once upon time the llama ##s ##ed ##ing".split(" "),
];

export interface TinyVocabOptions {
  /** tokenizer.ggml.model: "llama" (default), "bert", "rwkv", "none", ... */
  model?: string;
  /** Default SPM_TOKENS for "llama", WPM_TOKENS for "bert", none for "none". */
  tokens?: readonly string[];
  /** tokenizer.ggml.token_type; default: SPM's unknown/control/byte/normal layout, or all NORMAL (CONTROL for [..]). */
  tokenTypes?: readonly number[];
  /** uint32 keys such as "tokenizer.ggml.bos_token_id"; default BOS 1, EOS 2, UNK 0 for "llama", none otherwise. */
  ids?: Record<string, number>;
}

export async function writeTinyVocab(path: string, options: TinyVocabOptions = {}): Promise<void> {
  const model = options.model ?? "llama";
  const tokens = options.tokens ?? (model === "llama" ? SPM_TOKENS : model === "bert" ? WPM_TOKENS : model === "none" ? [] : SPM_TOKENS);
  const types =
    options.tokenTypes ??
    tokens.map((token, i) => {
      if (model === "llama") return i === 0 ? TokenType.UNKNOWN : i < 3 ? TokenType.CONTROL : i < 259 ? TokenType.BYTE : TokenType.NORMAL;
      return /^\[[A-Z]+\]$/.test(token) ? TokenType.CONTROL : TokenType.NORMAL;
    });
  const ids = options.ids ?? (model === "llama" ? { "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0 } : {});
  const writer = new GgufWriter().addMetadata("general.architecture", GgufValueType.STRING, "llama").addMetadata("tokenizer.ggml.model", GgufValueType.STRING, model);
  if (tokens.length > 0) {
    writer
      .addArray("tokenizer.ggml.tokens", GgufValueType.STRING, tokens)
      .addArray("tokenizer.ggml.scores", GgufValueType.FLOAT32, tokens.map((_, i) => -i))
      .addArray("tokenizer.ggml.token_type", GgufValueType.INT32, types);
  }
  for (const [key, value] of Object.entries(ids)) writer.addMetadata(key, GgufValueType.UINT32, value);
  await writer.write(path);
}
