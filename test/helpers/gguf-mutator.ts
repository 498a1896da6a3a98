/**
 * Seeded mutations of a valid GGUF file for the load fuzz test (test/fuzz-load.test.ts): truncations, bit flips and
 * targeted edits of the header's fields (counts, metadata keys, value types, string lengths, array counts, scalar
 * values, tensor names, dimensions, types and offsets), absurd values, and a few semantic edits that keep the file
 * well-formed (another architecture or tokenizer, a duplicate token, an inserted key). Mutant `i` of seed `s` is a
 * pure function of (base file, s, i), so a failure is reproduced from its index alone.
 */
import { GgufValueType } from "../../src/gguf/types.js";

export interface Mutant {
  index: number;
  /** What was done, e.g. `tensor "blk.0.attn_q.weight" dim 1 = 4294967296`; several edits are joined with "; ". */
  description: string;
  bytes: Buffer;
}

/** mulberry32: a small, fast, seedable PRNG (the same one tiny-llama uses for weights). */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Random = () => number;

/** Where each field of a GGUF header lies (absolute byte offsets). */
export interface GgufLayout {
  versionAt: number;
  tensorCountAt: number;
  kvCountAt: number;
  kvs: KvLayout[];
  tensors: TensorLayout[];
  /** End of the tensor infos (before padding). */
  headerEnd: number;
  alignment: number;
  dataOffset: number;
}

interface KvLayout {
  key: string;
  /** The u64 length of the key; the key's bytes follow. */
  keyAt: number;
  keyBytes: number;
  typeAt: number;
  type: number;
  /** The value: for strings its u64 length, for arrays the u32 item type, else the scalar itself. */
  valueAt: number;
  /** End of the whole entry. */
  end: number;
  array?: { itemType: number; countAt: number; count: number; items: { at: number; bytes: number }[] };
}

interface TensorLayout {
  name: string;
  nameAt: number;
  nameBytes: number;
  dimsAt: number;
  dims: number[];
  typeAt: number;
  offsetAt: number;
}

const SCALAR_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Walks a well-formed GGUF (the base file); throws on anything else. */
export function layoutOf(buf: Buffer): GgufLayout {
  let p = 8;
  const u32 = () => {
    const v = buf.readUInt32LE(p);
    p += 4;
    return v;
  };
  const u64 = () => {
    const v = Number(buf.readBigUInt64LE(p));
    p += 8;
    return v;
  };
  const str = () => {
    const at = p;
    const n = u64();
    const s = buf.toString("utf8", p, p + n);
    p += n;
    return { at, bytes: n, s };
  };
  const tensorCount = Number(buf.readBigInt64LE(8));
  const kvCount = Number(buf.readBigInt64LE(16));
  p = 24;
  const kvs: KvLayout[] = [];
  let alignment = 32;
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const typeAt = p;
    const type = u32();
    const valueAt = p;
    let array: KvLayout["array"];
    if (type === GgufValueType.STRING) {
      str();
    } else if (type === GgufValueType.ARRAY) {
      const itemType = u32();
      const countAt = p;
      const count = u64();
      const items: { at: number; bytes: number }[] = [];
      for (let j = 0; j < count; j++) {
        if (itemType === GgufValueType.STRING) {
          const item = str();
          items.push({ at: item.at, bytes: item.bytes });
        } else {
          const size = SCALAR_SIZE[itemType];
          if (size === undefined) throw new Error(`layoutOf: nested arrays are not supported (${key.s})`);
          items.push({ at: p, bytes: size });
          p += size;
        }
      }
      array = { itemType, countAt, count, items };
    } else {
      const size = SCALAR_SIZE[type];
      if (size === undefined) throw new Error(`layoutOf: unknown type ${type}`);
      if (key.s === "general.alignment") alignment = buf.readUInt32LE(p);
      p += size;
    }
    kvs.push({ key: key.s, keyAt: key.at, keyBytes: key.bytes, typeAt, type, valueAt, end: p, ...(array ? { array } : {}) });
  }
  const tensors: TensorLayout[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const dimsAt = p;
    const nDims = u32();
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(u64());
    const typeAt = p;
    p += 4;
    const offsetAt = p;
    p += 8;
    tensors.push({ name: name.s, nameAt: name.at, nameBytes: name.bytes, dimsAt, dims, typeAt, offsetAt });
  }
  const headerEnd = p;
  return {
    versionAt: 4,
    tensorCountAt: 8,
    kvCountAt: 16,
    kvs,
    tensors,
    headerEnd,
    alignment,
    dataOffset: Math.ceil(headerEnd / alignment) * alignment,
  };
}

/** The `count` mutants of `base` for `seed`. */
export function makeMutants(base: Buffer, seed: number, count: number): Mutant[] {
  const layout = layoutOf(base);
  const mutants: Mutant[] = [];
  for (let index = 0; index < count; index++) mutants.push(makeMutant(base, layout, seed, index));
  return mutants;
}

export function makeMutant(base: Buffer, layout: GgufLayout, seed: number, index: number): Mutant {
  const random = prng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);
  // Two or three edits in one file for one mutant in six; a truncation is always the last edit.
  const edits = random() < 1 / 6 ? 2 + Math.floor(random() * 2) : 1;
  let bytes: Buffer = Buffer.from(base);
  let current = layout;
  const descriptions: string[] = [];
  for (let e = 0; e < edits; e++) {
    const result = mutateOnce(bytes, current, random);
    descriptions.push(result.description);
    bytes = result.bytes;
    if (result.structural) break; // the layout no longer describes the file: stop here
    current = result.layout ?? current;
  }
  return { index, description: descriptions.join("; "), bytes };
}

interface EditResult {
  bytes: Buffer;
  description: string;
  /** The edit changed the file's structure in a way the layout no longer describes. */
  structural: boolean;
  /** The new layout, for edits that rebuild the file consistently (splices). */
  layout?: GgufLayout;
}

const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const int = (random: Random, below: number): number => Math.floor(random() * below);

type Op = (bytes: Buffer, layout: GgufLayout, random: Random) => EditResult;

const OPS: [weight: number, op: Op][] = [
  [10, truncate],
  [8, flipHeaderBits],
  [4, scribbleHeader],
  [6, editCounts],
  [10, editKeyOrType],
  [10, editValueLength],
  [10, editScalar],
  [6, editTokenArray],
  [8, semanticString],
  [6, insertKey],
  [2, duplicateToken],
  [8, editTensorName],
  [10, editTensorDims],
  [6, editTensorType],
  [8, editTensorOffset],
  [3, editData],
];
const TOTAL_WEIGHT = OPS.reduce((sum, [w]) => sum + w, 0);

function mutateOnce(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  let roll = random() * TOTAL_WEIGHT;
  for (const [weight, op] of OPS) {
    if ((roll -= weight) < 0) return op(bytes, layout, random);
  }
  return truncate(bytes, layout, random);
}

// ---- interesting values ---------------------------------------------------------------------------------------

function interestingUnsigned(random: Random, original: bigint, width: 4 | 8): bigint {
  const max = width === 4 ? 0xffffffffn : 0xffffffffffffffffn;
  const candidates: bigint[] = [
    0n,
    1n,
    2n,
    original + 1n,
    original > 0n ? original - 1n : max,
    original * 2n,
    original * 1000n,
    original ^ (1n << BigInt(int(random, width * 8))),
    max,
    max >> 1n,
    (max >> 1n) + 1n,
    0x7fffffffn,
    0x80000000n,
    0x100000000n,
    1n << 53n,
    1n << 62n,
    BigInt(int(random, 0x10000)),
    BigInt(Math.floor(random() * 2 ** 32)) * (width === 8 ? BigInt(Math.floor(random() * 2 ** 32)) : 1n),
  ];
  return pick(random, candidates) & max;
}

function writeUnsigned(bytes: Buffer, at: number, value: bigint, width: number): void {
  if (width === 8) bytes.writeBigUInt64LE(value & 0xffffffffffffffffn, at);
  else if (width === 4) bytes.writeUInt32LE(Number(value & 0xffffffffn), at);
  else if (width === 2) bytes.writeUInt16LE(Number(value & 0xffffn), at);
  else bytes.writeUInt8(Number(value & 0xffn), at);
}

function readUnsigned(bytes: Buffer, at: number, width: number): bigint {
  if (width === 8) return bytes.readBigUInt64LE(at);
  if (width === 4) return BigInt(bytes.readUInt32LE(at));
  if (width === 2) return BigInt(bytes.readUInt16LE(at));
  return BigInt(bytes.readUInt8(at));
}

const INTERESTING_FLOATS = [0, -0, NaN, Infinity, -Infinity, 1e30, -1, 1e-30, 3.4e38, -1e-45];

function unchanged(bytes: Buffer, description: string): EditResult {
  return { bytes, description, structural: false };
}

// ---- the edits --------------------------------------------------------------------------------------------------

function truncate(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  // Half of the cuts inside the header, where every byte matters; the rest anywhere (in the tensor data).
  const at = random() < 0.5 ? int(random, layout.dataOffset + 1) : int(random, bytes.length);
  return { bytes: bytes.subarray(0, at), description: `truncated to ${at} of ${bytes.length} bytes`, structural: true };
}

function flipHeaderBits(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const n = 1 + int(random, 4);
  const at: number[] = [];
  for (let i = 0; i < n; i++) {
    const position = int(random, layout.headerEnd);
    bytes[position]! ^= 1 << int(random, 8);
    at.push(position);
  }
  return { bytes, description: `flipped bits at header bytes ${at.join(",")}`, structural: true };
}

function scribbleHeader(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const length = 1 + int(random, 8);
  const at = int(random, Math.max(1, layout.headerEnd - length));
  const fill = pick(random, ["random", "0x00", "0xff"]);
  for (let i = 0; i < length; i++) bytes[at + i] = fill === "random" ? int(random, 256) : fill === "0x00" ? 0 : 0xff;
  return { bytes, description: `${length} ${fill} bytes at header byte ${at}`, structural: true };
}

function editCounts(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const which = pick(random, ["version", "tensor count", "metadata count"] as const);
  if (which === "version") {
    const value = pick(random, [0n, 1n, 2n, 4n, 0x03000000n, 0xffffffffn]);
    writeUnsigned(bytes, layout.versionAt, value, 4);
    return { bytes, description: `version = ${value}`, structural: true };
  }
  const at = which === "tensor count" ? layout.tensorCountAt : layout.kvCountAt;
  const value = interestingUnsigned(random, readUnsigned(bytes, at, 8), 8);
  writeUnsigned(bytes, at, value, 8);
  return { bytes, description: `${which} = ${value}`, structural: true };
}

function editKeyOrType(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const kv = pick(random, layout.kvs);
  const what = pick(random, ["key length", "key byte", "key = other key", "type"] as const);
  if (what === "key length") {
    const value = interestingUnsigned(random, BigInt(kv.keyBytes), 8);
    writeUnsigned(bytes, kv.keyAt, value, 8);
    return { bytes, description: `key "${kv.key}" length = ${value}`, structural: true };
  }
  if (what === "key byte") {
    const at = kv.keyAt + 8 + int(random, kv.keyBytes);
    const value = pick(random, [0, 0x2e, 0x41 + int(random, 26), 0xff, int(random, 256)]);
    bytes[at] = value;
    return { bytes, description: `key "${kv.key}" byte ${at - kv.keyAt - 8} = ${value}`, structural: false };
  }
  if (what === "key = other key") {
    const other = layout.kvs.find((o) => o !== kv && o.keyBytes === kv.keyBytes);
    if (!other) return editKeyOrType(bytes, layout, random);
    bytes.copy(bytes, kv.keyAt + 8, other.keyAt + 8, other.keyAt + 8 + other.keyBytes);
    return { bytes, description: `key "${kv.key}" renamed to "${other.key}" (duplicate key)`, structural: false };
  }
  const value = pick(random, [0, 1, 4, 5, 6, 7, 8, 9, 10, 12, 13, 255, 0xffffffff]);
  bytes.writeUInt32LE(value >>> 0, kv.typeAt);
  return { bytes, description: `key "${kv.key}" type ${kv.type} -> ${value >>> 0}`, structural: true };
}

function editValueLength(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const candidates = layout.kvs.filter((kv) => kv.type === GgufValueType.STRING || kv.type === GgufValueType.ARRAY);
  const kv = pick(random, candidates);
  if (kv.type === GgufValueType.STRING) {
    const value = interestingUnsigned(random, readUnsigned(bytes, kv.valueAt, 8), 8);
    writeUnsigned(bytes, kv.valueAt, value, 8);
    return { bytes, description: `string "${kv.key}" length = ${value}`, structural: true };
  }
  const array = kv.array!;
  if (random() < 0.3) {
    const value = pick(random, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0xffffffff]);
    bytes.writeUInt32LE(value >>> 0, kv.valueAt);
    return { bytes, description: `array "${kv.key}" item type ${array.itemType} -> ${value >>> 0}`, structural: true };
  }
  const value = interestingUnsigned(random, BigInt(array.count), 8);
  writeUnsigned(bytes, array.countAt, value, 8);
  return { bytes, description: `array "${kv.key}" count ${array.count} -> ${value}`, structural: true };
}

function editScalar(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const kv = pick(
    random,
    layout.kvs.filter((k) => k.type !== GgufValueType.STRING && k.type !== GgufValueType.ARRAY),
  );
  const size = SCALAR_SIZE[kv.type]!;
  if (kv.type === GgufValueType.FLOAT32) {
    const value = pick(random, INTERESTING_FLOATS);
    bytes.writeFloatLE(value, kv.valueAt);
    return unchanged(bytes, `"${kv.key}" = ${value}`);
  }
  if (kv.type === GgufValueType.BOOL) {
    const value = pick(random, [0, 1, 2, 0xff]);
    bytes[kv.valueAt] = value;
    return unchanged(bytes, `"${kv.key}" = ${value} (bool byte)`);
  }
  const original = readUnsigned(bytes, kv.valueAt, size);
  const value = size >= 4 ? interestingUnsigned(random, original, size as 4 | 8) : BigInt(int(random, 1 << (8 * size)));
  writeUnsigned(bytes, kv.valueAt, value, size);
  return unchanged(bytes, `"${kv.key}" = ${value}`);
}

function editTokenArray(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const kv = pick(
    random,
    layout.kvs.filter((k) => k.array && k.array.count > 0),
  );
  const array = kv.array!;
  const item = int(random, array.count);
  const { at, bytes: size } = array.items[item]!;
  if (array.itemType === GgufValueType.STRING) {
    if (random() < 0.5 && size > 0) {
      const position = at + 8 + int(random, size);
      bytes[position] = pick(random, [0, 0x20, 0x80, 0xc3, 0xff, int(random, 256)]);
      return unchanged(bytes, `"${kv.key}"[${item}] byte ${position - at - 8} changed`);
    }
    const value = interestingUnsigned(random, BigInt(size), 8);
    writeUnsigned(bytes, at, value, 8);
    return { bytes, description: `"${kv.key}"[${item}] length ${size} -> ${value}`, structural: true };
  }
  if (array.itemType === GgufValueType.FLOAT32) {
    bytes.writeFloatLE(pick(random, INTERESTING_FLOATS), at);
    return unchanged(bytes, `"${kv.key}"[${item}] = odd float`);
  }
  const value = size >= 4 ? interestingUnsigned(random, readUnsigned(bytes, at, size), size as 4 | 8) : BigInt(int(random, 256));
  writeUnsigned(bytes, at, value, size);
  return unchanged(bytes, `"${kv.key}"[${item}] = ${value}`);
}

/** GGUF bytes of a string (u64 length + UTF-8). */
function encodeString(text: string): Buffer {
  const body = Buffer.from(text, "utf8");
  const out = Buffer.alloc(8 + body.length);
  out.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(out, 8);
  return out;
}

/**
 * Replaces header bytes [from, to) with `insert` and moves the tensor data to the new, re-padded data offset, so the
 * file stays well-formed (tensor offsets are relative to the data section). `kvDelta` adjusts the metadata count.
 */
function splice(bytes: Buffer, layout: GgufLayout, from: number, to: number, insert: Buffer, kvDelta = 0): EditResult {
  const header = Buffer.concat([bytes.subarray(0, from), insert, bytes.subarray(to, layout.headerEnd)]);
  if (kvDelta !== 0) header.writeBigInt64LE(header.readBigInt64LE(layout.kvCountAt) + BigInt(kvDelta), layout.kvCountAt);
  const padded = Math.ceil(header.length / layout.alignment) * layout.alignment;
  const out = Buffer.concat([header, Buffer.alloc(padded - header.length), bytes.subarray(layout.dataOffset)]);
  return { bytes: out, description: "", structural: false, layout: layoutOf(out) };
}

const STRING_VALUES: Record<string, string[]> = {
  "general.architecture": ["bert", "nomic-bert", "t5", "t5encoder", "mamba", "rwkv6", "gemma3", "qwen2", "phi3", "dream", "gemma-embedding", "", "no-such-arch"],
  "tokenizer.ggml.model": ["none", "no_vocab", "bert", "gpt2", "t5", "rwkv", "plamo2", "gemma4", "hybriddna", "whitespace", "", "unknown"],
};

function semanticString(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const kv = pick(
    random,
    layout.kvs.filter((k) => k.type === GgufValueType.STRING),
  );
  const values = STRING_VALUES[kv.key] ?? ["", "x".repeat(300), "\u0000", "<s>"];
  const value = pick(random, values);
  const end = kv.valueAt + 8 + Number(bytes.readBigUInt64LE(kv.valueAt));
  const result = splice(bytes, layout, kv.valueAt, end, encodeString(value));
  return { ...result, description: `"${kv.key}" = ${JSON.stringify(value)}` };
}

function scalarEntry(key: string, type: number, value: number | boolean): Buffer {
  const size = SCALAR_SIZE[type]!;
  const out = Buffer.alloc(size + 4);
  out.writeUInt32LE(type, 0);
  if (type === GgufValueType.BOOL) out[4] = value ? 1 : 0;
  else if (type === GgufValueType.FLOAT32) out.writeFloatLE(Number(value), 4);
  else writeUnsigned(out, 4, BigInt(value) & ((1n << BigInt(size * 8)) - 1n), size);
  return Buffer.concat([encodeString(key), out]);
}

function insertKey(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const U32 = GgufValueType.UINT32;
  const BOOL = GgufValueType.BOOL;
  const choices: [string, number, number | boolean][] = [
    ["llama.attention.causal", BOOL, false],
    ["llama.pooling_type", U32, pick(random, [0, 1, 2, 3, 4, 99])],
    ["tokenizer.ggml.add_bos_token", BOOL, random() < 0.5],
    ["tokenizer.ggml.add_eos_token", BOOL, true],
    ["tokenizer.ggml.bos_token_id", U32, pick(random, [0xffffffff, 999999, 0])],
    ["tokenizer.ggml.eos_token_id", U32, pick(random, [0xffffffff, 999999, 1])],
    ["tokenizer.ggml.seperator_token_id", U32, 0xffffffff],
    ["general.alignment", U32, pick(random, [0, 1, 3, 8, 64, 0x80000000])],
    ["llama.expert_count", U32, pick(random, [0, 2, 8, 0xffffffff])],
    ["llama.expert_used_count", U32, pick(random, [1, 2, 9])],
    ["llama.attention.sliding_window", U32, pick(random, [0, 1, 4, 0xffffffff])],
    ["llama.attention.key_length", U32, pick(random, [0, 1, 8, 9, 64, 0xffffffff])],
    ["llama.attention.value_length", U32, pick(random, [0, 1, 9, 0xffffffff])],
    ["llama.rope.scaling.factor", GgufValueType.FLOAT32, pick(random, INTERESTING_FLOATS)],
    ["llama.vocab_size", U32, pick(random, [0, 1, 0xffffffff])],
    ["tokenizer.ggml.token_type_count", U32, pick(random, [0, 2, 0xffffffff])],
    ["llama.logit_scale", GgufValueType.FLOAT32, pick(random, INTERESTING_FLOATS)],
  ];
  const [key, type, value] = pick(random, choices);
  const existing = layout.kvs.find((kv) => kv.key === key);
  const entry = scalarEntry(key, type, value);
  // An existing key is replaced in place (the reader and ggml refuse duplicate keys).
  const result = existing ? splice(bytes, layout, existing.keyAt, existing.end, entry) : splice(bytes, layout, layout.kvs.at(-1)!.end, layout.kvs.at(-1)!.end, entry, 1);
  if (key === "general.alignment" && result.layout) {
    // The data was laid out for the old alignment: the reader and llama.cpp see the new one (a mismatch on purpose).
    return { ...result, description: `"${key}" = ${String(value)}`, structural: true };
  }
  return { ...result, description: `"${key}" = ${String(value)}` };
}

function duplicateToken(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const tokens = layout.kvs.find((kv) => kv.key === "tokenizer.ggml.tokens")?.array;
  if (!tokens) return editScalar(bytes, layout, random);
  for (let attempt = 0; attempt < 100; attempt++) {
    const a = int(random, tokens.count);
    const b = int(random, tokens.count);
    const A = tokens.items[a]!;
    const B = tokens.items[b]!;
    if (a === b || A.bytes !== B.bytes) continue;
    bytes.copy(bytes, B.at + 8, A.at + 8, A.at + 8 + A.bytes);
    return unchanged(bytes, `token ${b} = token ${a} (duplicate token text)`);
  }
  return editScalar(bytes, layout, random);
}

function editTensorName(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const tensor = pick(random, layout.tensors);
  const what = random();
  if (what < 0.3) {
    const value = interestingUnsigned(random, BigInt(tensor.nameBytes), 8);
    writeUnsigned(bytes, tensor.nameAt, value, 8);
    return { bytes, description: `tensor "${tensor.name}" name length = ${value}`, structural: true };
  }
  if (what < 0.6) {
    const other = layout.tensors.find((t) => t !== tensor && t.nameBytes === tensor.nameBytes);
    if (other) {
      bytes.copy(bytes, tensor.nameAt + 8, other.nameAt + 8, other.nameAt + 8 + other.nameBytes);
      return unchanged(bytes, `tensor "${tensor.name}" renamed to "${other.name}" (duplicate tensor)`);
    }
  }
  const at = tensor.nameAt + 8 + int(random, tensor.nameBytes);
  bytes[at] = pick(random, [0, 0x2e, 0x30 + int(random, 10), 0x61 + int(random, 26), 0xff]);
  return unchanged(bytes, `tensor "${tensor.name}" name byte ${at - tensor.nameAt - 8} changed`);
}

function editTensorDims(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const tensor = pick(random, layout.tensors);
  if (random() < 0.25) {
    const value = pick(random, [0, 1, 2, 3, 4, 5, 8, 0xffffffff]);
    bytes.writeUInt32LE(value >>> 0, tensor.dimsAt);
    return { bytes, description: `tensor "${tensor.name}" n_dims ${tensor.dims.length} -> ${value >>> 0}`, structural: true };
  }
  const d = int(random, tensor.dims.length);
  const at = tensor.dimsAt + 4 + d * 8;
  if (random() < 0.2 && tensor.dims.length >= 2) {
    // Dimensions whose product overflows 64 bits while each one alone looks plausible.
    writeUnsigned(bytes, tensor.dimsAt + 4, 1n << 32n, 8);
    writeUnsigned(bytes, tensor.dimsAt + 12, 1n << 33n, 8);
    return unchanged(bytes, `tensor "${tensor.name}" dims = [2^32, 2^33] (product overflows)`);
  }
  const value = pick(random, [
    0n,
    1n,
    BigInt(tensor.dims[d]! + 1),
    BigInt(Math.max(0, tensor.dims[d]! - 1)),
    BigInt(tensor.dims[d]! * 2),
    BigInt(tensor.dims[d]!) * 1000000n,
    0x7fffffffffffffffn,
    0xffffffffffffffffn,
    1n << 31n,
    1n << 40n,
  ]);
  writeUnsigned(bytes, at, value, 8);
  return unchanged(bytes, `tensor "${tensor.name}" dim ${d} ${tensor.dims[d]!} -> ${value}`);
}

function editTensorType(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const tensor = pick(random, layout.tensors);
  const value = pick(random, [1, 2, 3, 4, 5, 8, 12, 14, 16, 20, 24, 26, 28, 30, 31, 33, 36, 39, 40, 41, 42, 43, 100, -1, 0x7fffffff]);
  bytes.writeInt32LE(value, tensor.typeAt);
  return unchanged(bytes, `tensor "${tensor.name}" type -> ${value}`);
}

function editTensorOffset(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const tensor = pick(random, layout.tensors);
  const original = bytes.readBigUInt64LE(tensor.offsetAt);
  const other = pick(random, layout.tensors);
  const dataSize = BigInt(bytes.length - layout.dataOffset);
  const value = pick(random, [
    0n,
    original + 1n,
    original + BigInt(layout.alignment),
    original > 0n ? original - BigInt(layout.alignment) : 0n,
    bytes.readBigUInt64LE(other.offsetAt),
    dataSize,
    dataSize - 4n,
    dataSize + BigInt(layout.alignment),
    0xffffffffffffffffn,
    0xffffffffffffffe0n,
    1n << 40n,
    1n << 62n,
  ]);
  writeUnsigned(bytes, tensor.offsetAt, value, 8);
  return unchanged(bytes, `tensor "${tensor.name}" offset ${original} -> ${value}`);
}

function editData(bytes: Buffer, layout: GgufLayout, random: Random): EditResult {
  const count = 1 + int(random, 64);
  const fill = pick(random, [NaN, Infinity, -Infinity, 3.4e38, 0]);
  const words = Math.floor((bytes.length - layout.dataOffset) / 4);
  for (let i = 0; i < count; i++) bytes.writeFloatLE(fill, layout.dataOffset + 4 * int(random, words));
  return unchanged(bytes, `${count} weights = ${fill}`);
}

// ---- deliberate edits, for tests that need one particular broken (or unusual) file --------------------------------

/** `bytes` with the scalar `key` set to `value` (replaced in place, or added after the last key). */
export function setScalar(bytes: Buffer, key: string, type: number, value: number | boolean): Buffer {
  const layout = layoutOf(bytes);
  const existing = layout.kvs.find((kv) => kv.key === key);
  const entry = scalarEntry(key, type, value);
  const last = layout.kvs.at(-1)!;
  return existing ? splice(bytes, layout, existing.keyAt, existing.end, entry).bytes : splice(bytes, layout, last.end, last.end, entry, 1).bytes;
}

/** `bytes` with the string `key` set to `value`. */
export function setString(bytes: Buffer, key: string, value: string): Buffer {
  const layout = layoutOf(bytes);
  const existing = layout.kvs.find((kv) => kv.key === key);
  const typed = Buffer.alloc(4);
  typed.writeUInt32LE(GgufValueType.STRING, 0);
  const entry = Buffer.concat([encodeString(key), typed, encodeString(value)]);
  const last = layout.kvs.at(-1)!;
  return existing ? splice(bytes, layout, existing.keyAt, existing.end, entry).bytes : splice(bytes, layout, last.end, last.end, entry, 1).bytes;
}

/** `bytes` (a copy) with tensor `name` declared as ggml type `type`; its data is left as it is. */
export function setTensorType(bytes: Buffer, name: string, type: number): Buffer {
  const tensor = layoutOf(bytes).tensors.find((t) => t.name === name);
  if (!tensor) throw new Error(`no tensor ${name}`);
  const out = Buffer.from(bytes);
  out.writeInt32LE(type, tensor.typeAt);
  return out;
}
