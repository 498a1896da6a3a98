import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaOciError } from "../src/errors.js";
import { parseGgufHeader, readGgufHeader } from "../src/gguf/reader.js";
import { GgmlType, GgufValueType, type GgufArray, type GgufEntry, type GgufHeader } from "../src/gguf/types.js";
import { GgufWriter } from "../src/gguf/writer.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama, randomWeights, toFloat16 } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const MODELS_DIR = dirname(DEFAULT_TINY_VOCAB);
const vocab = (name: string) => join(MODELS_DIR, `ggml-vocab-${name}.gguf`);

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir("llama-oci-gguf");
});
afterAll(async () => {
  await removeDir(dir);
});

function thrown(fn: () => unknown): LlamaOciError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(LlamaOciError);
    return error as LlamaOciError;
  }
  throw new Error("expected an error");
}

async function rejected(promise: Promise<unknown>): Promise<LlamaOciError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(LlamaOciError);
  return error as LlamaOciError;
}

const value = (header: GgufHeader, key: string) => header.metadata.get(key)?.value;
const array = (header: GgufHeader, key: string) => header.metadata.get(key)?.value as GgufArray;

/** Little-endian encoders for hand-assembling files, independent of the writer. */
const u32 = (n: number) => Buffer.from(new Uint32Array([n]).buffer);
const i32 = (n: number) => Buffer.from(new Int32Array([n]).buffer);
const u64 = (n: number) => Buffer.from(new BigUint64Array([BigInt(n)]).buffer);
const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);

describe("GGUF layout", () => {
  it("writes exactly the bytes gguf.h describes: header, KV, tensor info, padding to 32, padded data", () => {
    const data = new Float32Array([1.5, -2, 3.25]);
    const written = new GgufWriter()
      .addMetadata("k", GgufValueType.UINT32, 7)
      .addTensor("t", [3], GgmlType.F32, data)
      .toBuffer();
    const header = Buffer.concat([
      Buffer.from("GGUF"),
      u32(3),
      u64(1), // tensor count
      u64(1), // kv count
      str("k"),
      u32(GgufValueType.UINT32),
      u32(7),
      str("t"),
      u32(1), // n_dims
      u64(3), // ne[0]
      i32(GgmlType.F32),
      u64(0), // offset within the data section
    ]);
    expect(header.length).toBe(74);
    const expected = Buffer.concat([header, Buffer.alloc(96 - 74), Buffer.from(data.buffer), Buffer.alloc(32 - 12)]);
    expect(written.equals(expected)).toBe(true);
  });

  it("round-trips every value type, arrays, and tensors at aligned, consecutive offsets", () => {
    const big = 2n ** 63n + 5n;
    const writer = new GgufWriter()
      .addMetadata("general.architecture", GgufValueType.STRING, "llama")
      .addMetadata("u8", GgufValueType.UINT8, 255)
      .addMetadata("i8", GgufValueType.INT8, -128)
      .addMetadata("u16", GgufValueType.UINT16, 65535)
      .addMetadata("i16", GgufValueType.INT16, -32768)
      .addMetadata("u32", GgufValueType.UINT32, 4294967295)
      .addMetadata("i32", GgufValueType.INT32, -2147483648)
      .addMetadata("f32", GgufValueType.FLOAT32, 0.5)
      .addMetadata("f32.inexact", GgufValueType.FLOAT32, 0.1)
      .addMetadata("bool", GgufValueType.BOOL, true)
      .addMetadata("string", GgufValueType.STRING, "héllo ✓ 🦙")
      .addMetadata("empty", GgufValueType.STRING, "")
      .addMetadata("u64.small", GgufValueType.UINT64, 42)
      .addMetadata("u64.big", GgufValueType.UINT64, big)
      .addMetadata("i64", GgufValueType.INT64, -(2n ** 62n))
      .addMetadata("f64", GgufValueType.FLOAT64, 0.1)
      .addArray("strings", GgufValueType.STRING, ["a", "", "ü", "<0x0A>"])
      .addArray("i32s", GgufValueType.INT32, [1, -1, 2147483647])
      .addArray("f32s", GgufValueType.FLOAT32, [0.25, -8])
      .addArray("bools", GgufValueType.BOOL, [true, false, true])
      .addArray("nothing", GgufValueType.UINT8, []);
    const f32 = new Float32Array([1, 2, 3, 4, 5]); // 20 bytes: padded to 32
    const f16 = new Uint16Array([0x3c00, 0xc000]); // 4 bytes
    const q8 = Buffer.alloc(2 * 34, 7); // two Q8_0 blocks of 32 values
    const i8 = new Int8Array(64).fill(-3); // exactly two alignment units, no padding
    writer
      .addTensor("a", [5], GgmlType.F32, f32)
      .addTensor("b", [1, 2], GgmlType.F16, f16)
      .addTensor("c.quant", [32, 2], GgmlType.Q8_0, q8)
      .addTensor("d", [4, 4, 2, 2], GgmlType.I8, i8);
    const file = writer.toBuffer();
    const header = parseGgufHeader(file);

    expect(header.version).toBe(3);
    expect(header.alignment).toBe(32);
    expect([...header.metadata.keys()]).toEqual([
      "general.architecture", "u8", "i8", "u16", "i16", "u32", "i32", "f32", "f32.inexact", "bool", "string", "empty",
      "u64.small", "u64.big", "i64", "f64", "strings", "i32s", "f32s", "bools", "nothing",
    ]);
    expect(header.metadata.get("u8")).toEqual({ type: GgufValueType.UINT8, value: 255 });
    expect(value(header, "i8")).toBe(-128);
    expect(value(header, "u16")).toBe(65535);
    expect(value(header, "i16")).toBe(-32768);
    expect(value(header, "u32")).toBe(4294967295);
    expect(value(header, "i32")).toBe(-2147483648);
    expect(value(header, "f32")).toBe(0.5);
    expect(value(header, "f32.inexact")).toBe(Math.fround(0.1));
    expect(header.metadata.get("bool")).toEqual({ type: GgufValueType.BOOL, value: true });
    expect(value(header, "string")).toBe("héllo ✓ 🦙");
    expect(value(header, "empty")).toBe("");
    expect(value(header, "u64.small")).toBe(42);
    expect(value(header, "u64.big")).toBe(big);
    expect(value(header, "i64")).toBe(-(2n ** 62n));
    expect(value(header, "f64")).toBe(0.1);
    expect(header.metadata.get("strings")).toEqual({
      type: GgufValueType.ARRAY,
      value: { itemType: GgufValueType.STRING, length: 4, items: ["a", "", "ü", "<0x0A>"] },
    });
    expect(array(header, "i32s").items).toEqual([1, -1, 2147483647]);
    expect(array(header, "f32s").items).toEqual([0.25, -8]);
    expect(array(header, "bools").items).toEqual([true, false, true]);
    expect(array(header, "nothing")).toEqual({ itemType: GgufValueType.UINT8, length: 0, items: [] });

    expect(header.tensorCount).toBe(4);
    expect(header.tensors).toEqual([
      { name: "a", shape: [5], type: GgmlType.F32, offset: 0, size: 20 },
      { name: "b", shape: [1, 2], type: GgmlType.F16, offset: 32, size: 4 },
      { name: "c.quant", shape: [32, 2], type: GgmlType.Q8_0, offset: 64, size: 68 },
      { name: "d", shape: [4, 4, 2, 2], type: GgmlType.I8, offset: 160, size: 64 },
    ]);
    expect(header.dataOffset % 32).toBe(0);
    expect(file.length).toBe(header.dataOffset + 224);
    const at = (i: number) => file.subarray(header.dataOffset + header.tensors[i]!.offset, header.dataOffset + header.tensors[i]!.offset + header.tensors[i]!.size!);
    expect(at(0).equals(Buffer.from(f32.buffer))).toBe(true);
    expect(at(1).equals(Buffer.from(f16.buffer))).toBe(true);
    expect(at(2).equals(q8)).toBe(true);
    expect(at(3).equals(Buffer.from(i8.buffer))).toBe(true);
    // padding is zeros
    expect(file.subarray(header.dataOffset + 20, header.dataOffset + 32).every((b) => b === 0)).toBe(true);
  });

  it("honours general.alignment for the data section and every tensor", () => {
    const file = new GgufWriter()
      .addMetadata("general.alignment", GgufValueType.UINT32, 256)
      .addTensor("x", [3], GgmlType.F32, new Float32Array([1, 2, 3]))
      .addTensor("y", [1], GgmlType.F32, new Float32Array([9]))
      .toBuffer();
    const header = parseGgufHeader(file);
    expect(header.alignment).toBe(256);
    expect(header.dataOffset).toBe(256);
    expect(header.tensors.map((t) => t.offset)).toEqual([0, 256]);
    expect(file.length).toBe(256 + 512);
    expect(file.readFloatLE(header.dataOffset + 256)).toBe(9);
  });

  it("writes to a file the same bytes as toBuffer, leaving no temporary file", async () => {
    const target = join(dir, "streamed.gguf");
    const writer = new GgufWriter()
      .addArray("tokens", GgufValueType.STRING, ["x", "y"])
      .addTensor("w", [2, 3], GgmlType.F32, new Float32Array(6).fill(0.5));
    await writer.write(target);
    expect((await readFile(target)).equals(writer.toBuffer())).toBe(true);
    expect((await readdir(dir)).filter((name) => name.startsWith("streamed"))).toEqual(["streamed.gguf"]);
  });

  it("refuses values that would produce a file ggml cannot read", () => {
    const writer = new GgufWriter().addMetadata("a", GgufValueType.UINT8, 1);
    expect(thrown(() => writer.addMetadata("a", GgufValueType.UINT8, 2)).message).toMatch(/already added/);
    expect(thrown(() => writer.addMetadata("b", GgufValueType.UINT8, 256)).message).toMatch(/not a valid uint8/);
    expect(thrown(() => writer.addMetadata("b", GgufValueType.INT32, 1.5)).message).toMatch(/not a valid int32/);
    expect(thrown(() => writer.addMetadata("b", GgufValueType.UINT64, -1n)).message).toMatch(/not a valid uint64/);
    expect(thrown(() => writer.addMetadata("b", GgufValueType.STRING, 3)).message).toMatch(/not a valid string/);
    expect(thrown(() => writer.addMetadata("general.alignment", GgufValueType.UINT32, 48)).message).toMatch(/power of two/);
    expect(thrown(() => writer.addMetadata("b", GgufValueType.ARRAY, { itemType: GgufValueType.STRING, items: ["x"], length: 5 })).message).toMatch(
      /1 of 5 items/,
    );
    expect(thrown(() => writer.addTensor("t", [3], GgmlType.F32, new Float32Array(2))).message).toMatch(/needs 12 bytes of data, got 8/);
    expect(thrown(() => writer.addTensor("q", [16], GgmlType.Q4_0, Buffer.alloc(9))).message).toMatch(/multiple of 32/);
    expect(thrown(() => writer.addTensor("x".repeat(64), [1], GgmlType.F32, new Float32Array(1))).message).toMatch(/1 to 63 bytes/);
    expect(thrown(() => writer.addTensor("t", [1, 1, 1, 1, 1], GgmlType.F32, new Float32Array(1))).message).toMatch(/1 to 4/);
  });
});

describe("GGUF header errors", () => {
  const small = new GgufWriter()
    .addMetadata("general.architecture", GgufValueType.STRING, "llama")
    .addArray("tokenizer.ggml.tokens", GgufValueType.STRING, ["<s>", "</s>", "hi"])
    .addArray("tokenizer.ggml.scores", GgufValueType.FLOAT32, [0, 0, -1])
    .addTensor("token_embd.weight", [4, 3], GgmlType.F32, new Float32Array(12))
    .toBuffer();
  it("reports a file that is not GGUF", async () => {
    const json = Buffer.from('{"schemaVersion":2}');
    const error = thrown(() => parseGgufHeader(json, { source: "manifest.json" }));
    expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
    expect(error.message).toBe('manifest.json is not a GGUF file: it starts with "{"sc" instead of "GGUF"');
    const path = join(dir, "not.gguf");
    await writeFile(path, json);
    expect((await rejected(readGgufHeader(path))).message).toMatch(/not\.gguf is not a GGUF file/);
    await writeFile(path, "");
    expect((await rejected(readGgufHeader(path))).message).toMatch(/is not a GGUF file: it is empty/);
  });

  it("reports every cut inside the header as truncated, from the buffer and from a file", async () => {
    const header = parseGgufHeader(small);
    // The tensor infos end less than 32 bytes before the aligned data section.
    const ends = new Set<number>();
    for (let length = 1; length < header.dataOffset - 31; length++) {
      const error = thrown(() => parseGgufHeader(small.subarray(0, length)));
      expect(error.code).toBe("UNSUPPORTED_ARTIFACT");
      expect(error.message).toMatch(new RegExp(`^truncated GGUF header in the buffer: it ends at byte ${length}, in `));
      ends.add(length);
    }
    expect(ends.size).toBeGreaterThan(100);
    const path = join(dir, "cut.gguf");
    for (const [length, where] of [
      [2, "the magic number"],
      [6, "the version"],
      [12, "the tensor count"],
      [20, "the metadata count"],
      [50, "the metadata (3 keys) and tensor infos (1)"],
      [100, 'the value of "tokenizer.ggml.tokens"'],
      [150, "metadata key 2"],
      [header.dataOffset - 40, 'the info of tensor "token_embd.weight"'],
    ] as const) {
      await writeFile(path, small.subarray(0, length));
      const error = await rejected(readGgufHeader(path));
      expect(error.message).toBe(`truncated GGUF header in ${path}: it ends at byte ${length}, in ${where}`);
      expect(error.hint).toMatch(/download it again/);
    }
  });

  it("still reads the header when only the tensor data is cut", () => {
    const { dataOffset } = parseGgufHeader(small);
    const header = parseGgufHeader(small.subarray(0, dataOffset + 10));
    expect(header.tensors.map((t) => [t.name, t.size])).toEqual([["token_embd.weight", 48]]);
  });

  it("rejects versions and alignments that ggml rejects", () => {
    const patched = (at: number, bytes: Buffer) => {
      const copy = Buffer.from(small);
      bytes.copy(copy, at);
      return copy;
    };
    expect(thrown(() => parseGgufHeader(patched(4, u32(1)))).message).toMatch(/GGUF version 1 file, which llama.cpp no longer loads/);
    expect(thrown(() => parseGgufHeader(patched(4, u32(0x03000000)))).message).toMatch(/big-endian GGUF file is not supported/);
    expect(thrown(() => parseGgufHeader(patched(4, u32(4)))).message).toMatch(/is GGUF version 4/);
    expect(parseGgufHeader(patched(4, u32(2))).version).toBe(2);

    const aligned = new GgufWriter()
      .addMetadata("general.alignment", GgufValueType.UINT32, 64)
      .addTensor("w", [1], GgmlType.F32, new Float32Array(1))
      .toBuffer();
    const at = aligned.indexOf(Buffer.from("general.alignment")) + "general.alignment".length + 4;
    expect(aligned.readUInt32LE(at)).toBe(64);
    const bad = Buffer.from(aligned);
    bad.writeUInt32LE(48, at);
    expect(thrown(() => parseGgufHeader(bad)).message).toMatch(/"general.alignment" is 48, not a power of two/);
  });

  it("rejects counts that cannot fit in the file instead of looping over them", () => {
    const huge = Buffer.from(small);
    huge.writeBigInt64LE(10n ** 12n, 16); // kv count
    expect(thrown(() => parseGgufHeader(huge)).message).toMatch(/^truncated GGUF header/);
  });

  it("reads only the header of a file with a 50 MB tensor", async () => {
    const path = join(dir, "big.gguf");
    const big = new Float32Array(12_500_000);
    await new GgufWriter()
      .addMetadata("general.architecture", GgufValueType.STRING, "llama")
      .addTensor("small", [4], GgmlType.F32, new Float32Array(4))
      .addTensor("big", [big.length], GgmlType.F32, big)
      .write(path);
    const header = await readGgufHeader(path);
    expect(header.fileSize).toBe((await stat(path)).size);
    expect(header.fileSize).toBeGreaterThan(50_000_000);
    expect(header.tensors.map((t) => [t.name, t.offset, t.size])).toEqual([
      ["small", 0, 16],
      ["big", 32, 50_000_000],
    ]);
    expect(header.bytesRead).toBeLessThanOrEqual(64 * 1024);
  });

  it("steps over array items beyond maxArrayLength without reading them, keeping the count", async () => {
    const path = join(dir, "long-array.gguf");
    const items = Array.from({ length: 2_000_000 }, (_, i) => i);
    await new GgufWriter()
      .addArray("long", GgufValueType.UINT32, items)
      .addArray("words", GgufValueType.STRING, ["a", "bb", "ccc", "dddd"])
      .addMetadata("after", GgufValueType.STRING, "still here")
      .write(path);
    const header = await readGgufHeader(path, { maxArrayLength: 3 });
    expect(array(header, "long")).toEqual({ itemType: GgufValueType.UINT32, length: 2_000_000, items: [0, 1, 2] });
    expect(array(header, "words")).toEqual({ itemType: GgufValueType.STRING, length: 4, items: ["a", "bb", "ccc"] });
    expect(value(header, "after")).toBe("still here");
    expect(header.bytesRead).toBeLessThan(200 * 1024);
    const whole = await readGgufHeader(path);
    expect(array(whole, "long").items[1_999_999]).toBe(1_999_999);
  });
});

describe("llama.cpp vocab files", () => {
  const cases = [
    { name: "llama-spm", kv: 22, arch: "llama", model: "llama", tokens: 32000, merges: undefined, bos: 1, eos: 2 },
    { name: "llama-bpe", kv: 20, arch: "llama", model: "gpt2", tokens: 128256, merges: 280147, bos: 128000, eos: 128001 },
    { name: "gpt-2", kv: 16, arch: "gpt2", model: "gpt2", tokens: 50257, merges: 50000, bos: 50256, eos: 50256 },
    { name: "starcoder", kv: 19, arch: "starcoder2", model: "gpt2", tokens: 49152, merges: 48872, bos: 0, eos: 0 },
  ];

  it.each(cases)("parses ggml-vocab-$name.gguf", async (c) => {
    const header = await readGgufHeader(vocab(c.name));
    expect(header.version).toBe(3);
    expect(header.tensorCount).toBe(0);
    expect(header.metadata.size).toBe(c.kv);
    expect(header.dataOffset).toBe(header.fileSize);
    expect(value(header, "general.architecture")).toBe(c.arch);
    expect(value(header, "general.name")).toBe(c.name);
    expect(value(header, "tokenizer.ggml.model")).toBe(c.model);
    expect(header.metadata.get("tokenizer.ggml.bos_token_id")).toEqual({ type: GgufValueType.UINT32, value: c.bos });
    expect(value(header, "tokenizer.ggml.eos_token_id")).toBe(c.eos);
    const tokens = array(header, "tokenizer.ggml.tokens");
    expect(tokens.itemType).toBe(GgufValueType.STRING);
    expect(tokens.items.length).toBe(c.tokens);
    const types = array(header, "tokenizer.ggml.token_type");
    expect(types.itemType).toBe(GgufValueType.INT32);
    expect(types.length).toBe(c.tokens);
    if (c.merges === undefined) expect(header.metadata.has("tokenizer.ggml.merges")).toBe(false);
    else expect(array(header, "tokenizer.ggml.merges").items.length).toBe(c.merges);

    const short = await readGgufHeader(vocab(c.name), { maxArrayLength: 50 });
    expect(array(short, "tokenizer.ggml.tokens")).toEqual({ ...tokens, items: tokens.items.slice(0, 50) });
    expect(parseGgufHeader(await readFile(vocab(c.name)), { maxArrayLength: 50 }).metadata).toEqual(short.metadata);
  });

  it("reads the SentencePiece vocabulary's known tokens", async () => {
    const header = await readGgufHeader(vocab("llama-spm"));
    const tokens = array(header, "tokenizer.ggml.tokens").items;
    expect(tokens.slice(0, 4)).toEqual(["<unk>", "<s>", "</s>", "<0x00>"]);
    expect(array(header, "tokenizer.ggml.scores").itemType).toBe(GgufValueType.FLOAT32);
    expect(value(header, "tokenizer.ggml.add_bos_token")).toBe(true);
    expect(value(header, "llama.attention.layer_norm_rms_epsilon")).toBe(Math.fround(1e-5));
  });

  it("rewrites a vocab file byte for byte", async () => {
    const original = await readFile(vocab("gpt-2"));
    const header = parseGgufHeader(original);
    const writer = new GgufWriter();
    for (const [key, entry] of header.metadata) writer.addMetadata(key, entry.type, entry.value);
    expect(writer.toBuffer().equals(original)).toBe(true);
  });
});

describe("tiny llama models", () => {
  const expectedTensors = (nLayer: number, output = true) => [
    { name: "token_embd.weight", shape: [64, 32000] },
    { name: "output_norm.weight", shape: [64] },
    ...(output ? [{ name: "output.weight", shape: [64, 32000] }] : []),
    ...Array.from({ length: nLayer }, (_, i) => [
      { name: `blk.${i}.attn_norm.weight`, shape: [64] },
      { name: `blk.${i}.attn_q.weight`, shape: [64, 64] },
      { name: `blk.${i}.attn_k.weight`, shape: [64, 32] },
      { name: `blk.${i}.attn_v.weight`, shape: [64, 32] },
      { name: `blk.${i}.attn_output.weight`, shape: [64, 64] },
      { name: `blk.${i}.ffn_norm.weight`, shape: [64] },
      { name: `blk.${i}.ffn_gate.weight`, shape: [64, 128] },
      { name: `blk.${i}.ffn_down.weight`, shape: [128, 64] },
      { name: `blk.${i}.ffn_up.weight`, shape: [64, 128] },
    ]).flat(),
  ];

  it("generates every tensor and hyperparameter llama.cpp's llama loader needs, with the vocab's tokenizer", async () => {
    const path = join(dir, "tiny.gguf");
    const started = performance.now();
    const model = await makeTinyLlama(path);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeLessThan(5000); // about 0.1 s on a laptop; generous for loaded CI machines
    expect(model).toMatchObject({ path, vocabSize: 32000 });

    const header = await readGgufHeader(path);
    const entry = (key: string) => header.metadata.get(key);
    const uint32 = (v: number): GgufEntry => ({ type: GgufValueType.UINT32, value: v });
    expect(entry("general.architecture")).toEqual({ type: GgufValueType.STRING, value: "llama" });
    expect(entry("general.name")).toEqual({ type: GgufValueType.STRING, value: "tiny-llama" });
    expect(entry("general.file_type")).toEqual(uint32(0));
    expect(entry("llama.vocab_size")).toEqual(uint32(32000));
    expect(entry("llama.context_length")).toEqual(uint32(256));
    expect(entry("llama.embedding_length")).toEqual(uint32(64));
    expect(entry("llama.block_count")).toEqual(uint32(2));
    expect(entry("llama.feed_forward_length")).toEqual(uint32(128));
    expect(entry("llama.attention.head_count")).toEqual(uint32(4));
    expect(entry("llama.attention.head_count_kv")).toEqual(uint32(2));
    expect(entry("llama.rope.dimension_count")).toEqual(uint32(16));
    expect(entry("llama.attention.layer_norm_rms_epsilon")).toEqual({ type: GgufValueType.FLOAT32, value: Math.fround(1e-5) });
    expect(entry("llama.rope.freq_base")).toEqual({ type: GgufValueType.FLOAT32, value: 10000 });
    expect(header.metadata.has("tokenizer.chat_template")).toBe(false);

    const source = await readGgufHeader(DEFAULT_TINY_VOCAB);
    const tokenizer = (h: GgufHeader) => [...h.metadata].filter(([key]) => key.startsWith("tokenizer."));
    expect(tokenizer(header)).toEqual(tokenizer(source));
    expect(tokenizer(header).length).toBe(10);

    expect(header.tensors.map(({ name, shape }) => ({ name, shape }))).toEqual(expectedTensors(2));
    expect(model.tensors.map(({ name, shape }) => ({ name, shape }))).toEqual(expectedTensors(2));
    expect(header.tensors.every((t) => t.type === GgmlType.F32)).toBe(true);

    // Consecutive offsets, as gguf.cpp requires, and data that is neither constant nor large.
    let expectedOffset = 0;
    for (const tensor of header.tensors) {
      expect(tensor.offset).toBe(expectedOffset);
      expectedOffset += Math.ceil(tensor.size! / 32) * 32;
    }
    const file = await readFile(path);
    expect(file.length).toBe(header.dataOffset + expectedOffset);
    const floats = (name: string) => {
      const t = header.tensors.find((x) => x.name === name)!;
      const bytes = file.subarray(header.dataOffset + t.offset, header.dataOffset + t.offset + t.size!);
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    };
    const embd = floats("token_embd.weight");
    expect(Math.max(...embd.subarray(0, 10000))).toBeLessThanOrEqual(0.08);
    expect(Math.min(...embd.subarray(0, 10000))).toBeGreaterThanOrEqual(-0.08);
    expect(new Set(embd.subarray(0, 1000)).size).toBeGreaterThan(990);
    const norm = floats("blk.1.ffn_norm.weight");
    expect(norm.every((x) => x >= 0.92 && x <= 1.08)).toBe(true);
    expect(floats("output.weight")).not.toEqual(embd);
  });

  it("is deterministic per seed", async () => {
    const a = join(dir, "seed-a.gguf");
    const b = join(dir, "seed-b.gguf");
    const c = join(dir, "seed-c.gguf");
    await makeTinyLlama(a, { seed: 7, nLayer: 1 });
    await makeTinyLlama(b, { seed: 7, nLayer: 1 });
    await makeTinyLlama(c, { seed: 8, nLayer: 1 });
    const [bytesA, bytesB, bytesC] = await Promise.all([readFile(a), readFile(b), readFile(c)]);
    expect(bytesA.equals(bytesB)).toBe(true);
    expect(bytesA.length).toBe(bytesC.length);
    expect(bytesA.equals(bytesC)).toBe(false);
  });

  it("writes F16 weights (1-D norms stay F32), a chat template and tied embeddings on request", async () => {
    const path = join(dir, "tiny-f16.gguf");
    await makeTinyLlama(path, { tensorType: "f16", tieEmbeddings: true, chatTemplate: "{{ messages }}", seed: 3 });
    const header = await readGgufHeader(path);
    expect(value(header, "general.file_type")).toBe(1);
    expect(value(header, "tokenizer.chat_template")).toBe("{{ messages }}");
    expect(header.tensors.map(({ name, shape }) => ({ name, shape }))).toEqual(expectedTensors(2, false));
    for (const tensor of header.tensors) {
      expect([tensor.name, tensor.type]).toEqual([tensor.name, tensor.shape.length === 1 ? GgmlType.F32 : GgmlType.F16]);
    }
    const q = header.tensors.find((t) => t.name === "blk.0.attn_q.weight")!;
    const file = await readFile(path);
    const halves = new Uint16Array(file.buffer.slice(file.byteOffset + header.dataOffset + q.offset, file.byteOffset + header.dataOffset + q.offset + q.size!));
    const reference = randomWeights(3, "blk.0.attn_q.weight", 64 * 64);
    expect(halves.length).toBe(reference.length);
    for (let i = 0; i < halves.length; i++) expect(Math.abs(fromHalf(halves[i]!) - reference[i]!)).toBeLessThan(6.2e-5);
  });

  it("copies a BPE vocabulary with its merges", async () => {
    const path = join(dir, "tiny-gpt2.gguf");
    const model = await makeTinyLlama(path, { vocabFrom: vocab("gpt-2"), nLayer: 1, nEmbd: 32, nHead: 2, nHeadKv: 1, nFf: 64 });
    expect(model.vocabSize).toBe(50257);
    const header = await readGgufHeader(path, { maxArrayLength: 5 });
    expect(array(header, "tokenizer.ggml.merges").length).toBe(50000);
    expect(value(header, "tokenizer.ggml.pre")).toBe("gpt-2");
    expect(header.tensors.find((t) => t.name === "token_embd.weight")!.shape).toEqual([32, 50257]);
    expect(header.tensors.find((t) => t.name === "blk.0.attn_k.weight")!.shape).toEqual([32, 16]);
  });

  it("refuses head counts that do not divide", async () => {
    const error = await rejected(makeTinyLlama(join(dir, "bad.gguf"), { nHead: 3 }));
    expect(error.message).toMatch(/nEmbd 64 must split into 3 heads/);
  });

  it("converts to half precision with round-to-nearest-even", () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [65504, 0x7bff],
      [65520, 0x7c00], // rounds up to infinity
      [1e-7, 0x0002], // subnormal
      [2 ** -24, 0x0001],
      [2 ** -26, 0x0000],
      [1 + 2 ** -11, 0x3c00], // tie, stays even
      [1 + 3 * 2 ** -11, 0x3c02], // tie, rounds to even
      [-0, 0x8000],
    ];
    const halves = toFloat16(new Float32Array(cases.map(([v]) => v)));
    expect([...halves].map((h) => h.toString(16))).toEqual(cases.map(([, h]) => h.toString(16)));
  });
});

const python = (() => {
  const gguf = join(MODELS_DIR, "..", "gguf-py");
  try {
    execFileSync("python3", ["-c", "import numpy"], { stdio: "ignore" });
    return existsSync(gguf) ? gguf : undefined;
  } catch {
    return undefined;
  }
})();

describe.skipIf(python === undefined)("cross-check with llama.cpp's gguf-py reader", () => {
  it("sees the same keys, tensors, offsets and data in a tiny model", async () => {
    const path = join(dir, "crosscheck.gguf");
    await new GgufWriter()
      .addMetadata("general.alignment", GgufValueType.UINT32, 64)
      .addMetadata("odd", GgufValueType.INT64, -3)
      .addArray("words", GgufValueType.STRING, ["x", "yz"])
      .addTensor("q", [32, 3], GgmlType.Q8_0, Buffer.alloc(3 * 34, 1))
      .write(path);
    await makeTinyLlama(join(dir, "crosscheck-model.gguf"), { nLayer: 1, tensorType: "f16" });
    const script = `
import json, sys
from gguf import GGUFReader
out = []
for path in sys.argv[1:]:
    r = GGUFReader(path)
    out.append({
        "keys": [k for k in r.fields if not k.startswith("GGUF.")],
        "alignment": int(r.alignment),
        "tensors": [[t.name, [int(x) for x in t.shape], int(t.tensor_type), int(t.data_offset), int(t.n_bytes)] for t in r.tensors],
        "first": [float(r.tensors[i].data.reshape(-1)[0]) for i in range(len(r.tensors))],
    })
print(json.dumps(out))`;
    const outputs = JSON.parse(
      execFileSync("python3", ["-c", script, path, join(dir, "crosscheck-model.gguf")], { env: { ...process.env, PYTHONPATH: python! }, encoding: "utf8" }),
    ) as { keys: string[]; alignment: number; tensors: [string, number[], number, number, number][]; first: number[] }[];
    for (const [i, file] of [path, join(dir, "crosscheck-model.gguf")].entries()) {
      const header = await readGgufHeader(file);
      const theirs = outputs[i]!;
      expect(theirs.keys).toEqual([...header.metadata.keys()]);
      expect(theirs.alignment).toBe(header.alignment);
      expect(theirs.tensors).toEqual(header.tensors.map((t) => [t.name, t.shape, t.type, header.dataOffset + t.offset, t.size]));
    }
    const model = await readGgufHeader(join(dir, "crosscheck-model.gguf"));
    const embdIndex = model.tensors.findIndex((t) => t.name === "token_embd.weight");
    expect(outputs[1]!.first[embdIndex]).toBeCloseTo(randomWeights(1, "token_embd.weight", 1)[0]!, 3);
  });
});

function fromHalf(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
