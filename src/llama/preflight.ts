/**
 * Checks of a GGUF file's header, read with the project's own reader (src/gguf/reader.ts) before the file reaches
 * llama.cpp, for inputs that llama.cpp does not reject with an error but asserts on: a failed GGML_ASSERT aborts the
 * whole process. Each check mirrors one assert of the pinned llama.cpp (named in the comments); everything else is
 * left to llama.cpp, whose own errors are clear. A header the reader cannot parse is left to llama.cpp as well, so
 * that a file llama.cpp accepts is never refused here.
 */
import { LlamaOciError } from "../errors.js";
import { readGgufHeader } from "../gguf/reader.js";
import { GgmlType, GgufValueType, ggmlTypeName, isGgmlType, type GgufArray, type GgufEntry, type GgufHeader } from "../gguf/types.js";

/** llama-hparams.h: LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS. */
const MAX_LAYERS = 512;
const MAX_EXPERTS = 1024;
/** llama-model.cpp: LLAMA_ROPE_SCALING_TYPES. */
const ROPE_SCALING_TYPES = new Set(["none", "linear", "yarn", "longrope"]);
/** ggml-impl.h: TENSOR_ALIGNMENT, which a buffer made from a pointer into the mapped file must respect. */
const TENSOR_ALIGNMENT = 32;
/** Element types ggml's CPU operators cannot multiply or add activations with (no vec_dot, no binary op). */
const NON_COMPUTE_TYPES = new Set<number>([GgmlType.I8, GgmlType.I16, GgmlType.I32, GgmlType.I64, GgmlType.F64]);
/** llama-vocab.cpp: LLAMA_TOKEN_TYPE_BYTE in tokenizer.ggml.token_type. */
const TOKEN_TYPE_BYTE = 6;

export interface PreflightOptions {
  /** The model will be memory-mapped (LoadModelOptions.useMmap, default true). */
  useMmap?: boolean;
}

/** Refuses (code MODEL_LOAD) a GGUF that would make llama.cpp abort the process while loading or running it. */
export async function preflightModel(path: string, options: PreflightOptions = {}): Promise<void> {
  let header: GgufHeader;
  try {
    header = await readGgufHeader(path);
  } catch {
    return; // not a header our reader parses: llama.cpp reports what is wrong with it
  }
  const problem = findModelProblem(header, options);
  if (problem !== undefined) {
    throw new LlamaOciError("MODEL_LOAD", `cannot load model ${path}: ${problem}`, {
      hint: "the GGUF file is damaged or was written by a broken converter; download or convert it again",
    });
  }
}

/** The first reason llama.cpp would abort on this header, or undefined when there is none. */
export function findModelProblem(header: GgufHeader, options: PreflightOptions = {}): string | undefined {
  return (
    duplicateToken(header.metadata) ??
    byteTokenProblem(header.metadata) ??
    rwkvVocabularyProblem(header.metadata) ??
    hyperparameterProblem(header.metadata) ??
    tensorProblem(header, options.useMmap ?? true)
  );
}

/**
 * llama-vocab.cpp (llama_vocab::impl::load) maps each token's text to its id and then asserts
 * `id_to_token.size() == token_to_id.size()`: two tokens with the same text abort the load. The texts are compared
 * as llama.cpp sees them: a C string, so cut at its first NUL byte, and an empty one renamed "[EMPTY_<id>]".
 * Texts that are not valid UTF-8 (decoded here with U+FFFD) cannot be compared exactly and are left to the addon,
 * which repeats this check on the raw bytes.
 */
function duplicateToken(metadata: Map<string, GgufEntry>): string | undefined {
  const entry = metadata.get("tokenizer.ggml.tokens");
  if (entry?.type !== GgufValueType.ARRAY || entry.value.itemType !== GgufValueType.STRING) return undefined;
  const seen = new Map<string, number>();
  const items = entry.value.items;
  for (let id = 0; id < items.length; id++) {
    const raw = items[id];
    if (typeof raw !== "string") return undefined;
    const text = asLlamaSees(raw, id);
    if (text.includes("\uFFFD")) continue;
    const first = seen.get(text);
    if (first !== undefined) {
      return `its vocabulary is invalid: tokens ${first} and ${id} are both ${JSON.stringify(text)} (token texts must be unique)`;
    }
    seen.set(text, id);
  }
  return undefined;
}

/**
 * A WordPiece vocabulary (tokenizer.ggml.model "bert") has no byte tokens: llama.cpp aborts (token_to_byte,
 * GGML_ABORT) when it meets one while building its token-to-text cache at load time.
 */
function byteTokenProblem(metadata: Map<string, GgufEntry>): string | undefined {
  const model = metadata.get("tokenizer.ggml.model");
  const types = metadata.get("tokenizer.ggml.token_type");
  if (model?.type !== GgufValueType.STRING || model.value !== "bert") return undefined;
  if (types?.type !== GgufValueType.ARRAY || types.value.itemType !== GgufValueType.INT32) return undefined;
  const id = types.value.items.indexOf(TOKEN_TYPE_BYTE);
  return id < 0 ? undefined : `its vocabulary is invalid: token ${id} is a byte token, which a WordPiece ("bert") tokenizer cannot have`;
}

/**
 * Tensors llama.cpp would load but then crash on: weights of an integer (or F64) type, which ggml's CPU operators
 * cannot compute with (a null dot product, or GGML_ABORT "unsupported types"); 1-D weights (norms, biases) other
 * than F32, which ggml's CPU element-wise operators cannot combine with F32 activations (converters always write
 * them as F32); and, for a memory-mapped load, tensor data that does not start on a 32-byte boundary of the file
 * (GGML_ASSERT "buffer pointer must be aligned").
 */
function tensorProblem(header: GgufHeader, useMmap: boolean): string | undefined {
  let first = Number.POSITIVE_INFINITY;
  for (const tensor of header.tensors) {
    first = Math.min(first, tensor.offset);
    // Unknown types are llama.cpp's to report ("invalid ggml type").
    if (!/\.(weight|bias)$/.test(tensor.name) || !isGgmlType(tensor.type)) continue;
    if (NON_COMPUTE_TYPES.has(tensor.type)) {
      return `tensor "${tensor.name}" has type ${ggmlTypeName(tensor.type)}; weights must be floating-point or quantized`;
    }
    if (tensor.shape.length === 1 && tensor.type !== GgmlType.F32) {
      return `tensor "${tensor.name}" is a 1-D weight of type ${ggmlTypeName(tensor.type)}; llama.cpp computes with 1-D weights in F32 only`;
    }
  }
  if (useMmap && Number.isFinite(first) && (header.dataOffset + first) % TENSOR_ALIGNMENT !== 0) {
    return `its tensor data starts at byte ${header.dataOffset + first}, not on a ${TENSOR_ALIGNMENT}-byte boundary, so it cannot be memory-mapped (load it with useMmap: false)`;
  }
  return undefined;
}

/**
 * llama.cpp's RWKV tokenizer (llm_tokenizer_rwkv_session) matches the longest token in a trie and, when the bytes at
 * a position begin some token but complete none, starts over from the beginning of the text: an endless loop that
 * also grows the output without bound (already at load time, where it tokenizes "\n"). It cannot happen when every
 * byte that begins a token is itself a token, as in real RWKV vocabularies (all 256 bytes are tokens).
 */
function rwkvVocabularyProblem(metadata: Map<string, GgufEntry>): string | undefined {
  const model = metadata.get("tokenizer.ggml.model");
  const entry = metadata.get("tokenizer.ggml.tokens");
  if (model?.type !== GgufValueType.STRING || model.value !== "rwkv") return undefined;
  if (entry?.type !== GgufValueType.ARRAY || entry.value.itemType !== GgufValueType.STRING) return undefined;
  const starts = new Set<number>();
  const singles = new Set<number>();
  entry.value.items.forEach((item, id) => {
    if (typeof item !== "string") return;
    const bytes = unescapeRwkvToken(Buffer.from(asLlamaSees(item, id), "utf8"));
    if (bytes.length === 1) singles.add(bytes[0]!);
    if (bytes.length > 0) starts.add(bytes[0]!);
  });
  for (const byte of starts) {
    if (!singles.has(byte)) {
      const hex = byte.toString(16).padStart(2, "0");
      return `its RWKV vocabulary has tokens that begin with byte 0x${hex} but no token for that byte alone, on which llama.cpp's RWKV tokenizer never finishes`;
    }
  }
  return undefined;
}

/** A token's text as llama.cpp holds it: a C string (cut at its first NUL), an empty one renamed "[EMPTY_<id>]". */
function asLlamaSees(text: string, id: number): string {
  const nul = text.indexOf("\0");
  const cut = nul < 0 ? text : text.slice(0, nul);
  return cut === "" ? `[EMPTY_${id}]` : cut;
}

/** llama-vocab.cpp: llama_unescape_rwkv_token (\t, \n, \r, \xHH with lowercase hex, \<c>), on bytes. */
function unescapeRwkvToken(escaped: Uint8Array): number[] {
  const out: number[] = [];
  let escaping = false;
  let hexRemaining = 0;
  let hexAcc = 0;
  for (const c of escaped) {
    if (hexRemaining !== 0) {
      const value = (c >= 0x61 ? c - 0x61 + 10 : c - 0x30) & 0xff;
      hexAcc = ((hexAcc << 4) + value) & 0xff;
      if (--hexRemaining === 0) {
        out.push(hexAcc);
        hexAcc = 0;
      }
    } else if (escaping) {
      if (c === 0x74) out.push(0x09);
      else if (c === 0x6e) out.push(0x0a);
      else if (c === 0x72) out.push(0x0d);
      else if (c === 0x78) hexRemaining = 2;
      else out.push(c);
      escaping = false;
    } else if (c === 0x5c) {
      escaping = true;
    } else {
      out.push(c);
    }
  }
  return out;
}

/** The asserts of llama_model_base::load_hparams (llama-model.cpp) on the generic hyperparameters. */
function hyperparameterProblem(metadata: Map<string, GgufEntry>): string | undefined {
  const archEntry = metadata.get("general.architecture");
  if (archEntry?.type !== GgufValueType.STRING) return undefined;
  const arch = archEntry.value as string;
  if (arch === "clip") return undefined; // llama.cpp reads no hyperparameters of a CLIP model
  const key = (name: string) => `${arch}.${name}`;
  const u32 = (name: string): number | undefined => {
    const entry = metadata.get(key(name));
    return entry?.type === GgufValueType.UINT32 ? (entry.value as number) : undefined;
  };

  const layers = u32("block_count");
  if (layers !== undefined && (layers === 0 || layers > MAX_LAYERS)) {
    return `${key("block_count")} is ${layers}; llama.cpp supports 1 to ${MAX_LAYERS} layers`;
  }
  const nextn = u32("nextn_predict_layers");
  if (layers !== undefined && nextn !== undefined && nextn > layers) {
    return `${key("nextn_predict_layers")} is ${nextn}, more than the ${layers} layers`;
  }

  const experts = u32("expert_count") ?? 0;
  const used = maxOf(metadata.get(key("expert_used_count"))) ?? 0;
  const groups = u32("expert_group_count") ?? 0;
  const groupsUsed = u32("expert_group_used_count") ?? 0;
  if (experts > MAX_EXPERTS) return `${key("expert_count")} is ${experts}; llama.cpp supports at most ${MAX_EXPERTS} experts`;
  if (used > experts) return `${key("expert_used_count")} is ${used}, more than the ${experts} experts (${key("expert_count")})`;
  if (experts > 0) {
    if (used === 0) return `${key("expert_used_count")} is 0 for a model of ${experts} experts`;
    if (groups >= experts) return `${key("expert_group_count")} is ${groups}, not fewer than the ${experts} experts`;
    if (groups > 1 && (experts % groups !== 0 || groupsUsed === 0 || groupsUsed >= groups)) {
      return `${key("expert_group_count")} ${groups} and ${key("expert_group_used_count")} ${groupsUsed} do not fit ${experts} experts`;
    }
  } else if (groups !== 0) {
    return `${key("expert_group_count")} is ${groups} for a model without experts`;
  }

  // llama-graph.cpp (build_pooling) aborts on a pooling type it does not know (llama.h: 0 none ... 4 rank).
  const pooling = u32("pooling_type");
  if (pooling !== undefined && pooling > 4) return `${key("pooling_type")} is ${pooling}, not one of llama.cpp's pooling types (0 to 4)`;

  const scaling = metadata.get(key("rope.scaling.type"));
  if (scaling?.type === GgufValueType.STRING && !ROPE_SCALING_TYPES.has(scaling.value as string)) {
    return `${key("rope.scaling.type")} is ${JSON.stringify(scaling.value)}, not one of ${[...ROPE_SCALING_TYPES].join(", ")}`;
  }

  // ggml's norm operators (ggml-cpu/ops.cpp) assert `eps >= 0.0f` when the graph runs, so a NaN fails it too.
  for (const [name, entry] of metadata) {
    if (!name.startsWith(`${arch}.`) || !/epsilon$/.test(name) || entry.type !== GgufValueType.FLOAT32) continue;
    const value = entry.value as number;
    if (!(value >= 0)) return `${name} is ${value}; a norm epsilon must be a number >= 0`;
  }
  return undefined;
}

/** The largest value of a uint32/int32 scalar or array (a per-layer value), or undefined for anything else. */
function maxOf(entry: GgufEntry | undefined): number | undefined {
  if (entry === undefined) return undefined;
  if (entry.type === GgufValueType.UINT32 || entry.type === GgufValueType.INT32) return entry.value as number;
  if (entry.type !== GgufValueType.ARRAY) return undefined;
  const array: GgufArray = entry.value;
  if (array.itemType !== GgufValueType.UINT32 && array.itemType !== GgufValueType.INT32) return undefined;
  let max = 0;
  for (const item of array.items) if (typeof item === "number" && item > max) max = item;
  return max;
}
