/**
 * A tiny vision model for the tests: a tiny llama (tiny-model.ts) and a random-weight CLIP projector GGUF in the
 * layout libmtmd loads (deps/llama.cpp/tools/mtmd/clip.cpp, clip-impl.h): the LLaVA "mlp" projector type, a ViT of
 * a few layers over 32x32 images in 8x8 patches (16 image tokens), and an MLP whose output width is the language
 * model's embedding width. Also small PNG images, written here with node:zlib.
 */
import { writeFile } from "node:fs/promises";
import { deflateSync } from "node:zlib";
import { GgmlType, GgufValueType } from "../../src/gguf/types.js";
import { GgufWriter } from "../../src/gguf/writer.js";
import { makeTinyLlama, randomWeights, type TinyModelOptions } from "./tiny-model.js";

export interface TinyProjectorOptions {
  seed?: number;
  /** The language model's embedding width (the projector's output). Default 64, tiny-model's default. */
  textEmbd?: number;
  imageSize?: number;
  patchSize?: number;
  nEmbd?: number;
  nHead?: number;
  nFf?: number;
  nLayer?: number;
}

/** A ChatML-like template without BOS text, so that llama-mtmd-cli and llama-oci tokenize the prompt alike. */
export const TINY_VISION_TEMPLATE =
  "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

export async function makeTinyVisionModel(
  lmPath: string,
  projectorPath: string,
  options: { lm?: TinyModelOptions; projector?: TinyProjectorOptions } = {},
): Promise<void> {
  const lm = { nEmbd: 64, chatTemplate: TINY_VISION_TEMPLATE, ...options.lm };
  await makeTinyLlama(lmPath, lm);
  await makeTinyProjector(projectorPath, { textEmbd: lm.nEmbd, ...options.projector });
}

export async function makeTinyProjector(path: string, options: TinyProjectorOptions = {}): Promise<void> {
  const w = new GgufWriter();
  w.addMetadata("general.architecture", GgufValueType.STRING, "clip")
    .addMetadata("general.name", GgufValueType.STRING, "tiny-clip")
    .addMetadata("general.file_type", GgufValueType.UINT32, 0)
    .addMetadata("clip.projector_type", GgufValueType.STRING, "mlp");
  addTinyVisionEncoder(w, options);
  await w.write(path);
}

/**
 * The vision encoder's metadata (but the projector type, clip.projector_type, or clip.vision.projector_type in a
 * projector with audio too) and tensors: v.* and the LLaVA MLP, mm.0 and mm.2.
 */
export function addTinyVisionEncoder(w: GgufWriter, options: TinyProjectorOptions = {}): void {
  const seed = options.seed ?? 7;
  const textEmbd = options.textEmbd ?? 64;
  const imageSize = options.imageSize ?? 32;
  const patchSize = options.patchSize ?? 8;
  const nEmbd = options.nEmbd ?? 32;
  const nHead = options.nHead ?? 4;
  // Not equal to nEmbd: clip.cpp swaps ffn_up and ffn_down of old LLaVA files when ffn_down's rows are nEmbd wide.
  const nFf = options.nFf ?? 48;
  const nLayer = options.nLayer ?? 2;
  const nPatches = (imageSize / patchSize) ** 2;

  w.addMetadata("clip.has_vision_encoder", GgufValueType.BOOL, true)
    .addMetadata("clip.use_gelu", GgufValueType.BOOL, true)
    .addMetadata("clip.vision.image_size", GgufValueType.UINT32, imageSize)
    .addMetadata("clip.vision.patch_size", GgufValueType.UINT32, patchSize)
    .addMetadata("clip.vision.embedding_length", GgufValueType.UINT32, nEmbd)
    .addMetadata("clip.vision.feed_forward_length", GgufValueType.UINT32, nFf)
    .addMetadata("clip.vision.block_count", GgufValueType.UINT32, nLayer)
    .addMetadata("clip.vision.projection_dim", GgufValueType.UINT32, textEmbd)
    .addMetadata("clip.vision.attention.head_count", GgufValueType.UINT32, nHead)
    .addMetadata("clip.vision.attention.layer_norm_epsilon", GgufValueType.FLOAT32, 1e-5)
    .addArray("clip.vision.image_mean", GgufValueType.FLOAT32, [0.5, 0.5, 0.5])
    .addArray("clip.vision.image_std", GgufValueType.FLOAT32, [0.5, 0.5, 0.5]);

  const add = (name: string, shape: number[], center = 0): void => {
    w.addTensor(name, shape, GgmlType.F32, randomWeights(seed, name, shape.reduce((a, b) => a * b, 1), center));
  };
  // ggml order: shape[0] is the contiguous dimension (a matrix is [inputs, outputs]).
  add("v.patch_embd.weight", [patchSize, patchSize, 3, nEmbd]);
  add("v.patch_embd.bias", [nEmbd]);
  add("v.position_embd.weight", [nEmbd, nPatches]);
  add("v.pre_ln.weight", [nEmbd], 1);
  add("v.pre_ln.bias", [nEmbd]);
  for (let i = 0; i < nLayer; i++) {
    for (const part of ["attn_q", "attn_k", "attn_v", "attn_out"]) {
      add(`v.blk.${i}.${part}.weight`, [nEmbd, nEmbd]);
      add(`v.blk.${i}.${part}.bias`, [nEmbd]);
    }
    add(`v.blk.${i}.ln1.weight`, [nEmbd], 1);
    add(`v.blk.${i}.ln1.bias`, [nEmbd]);
    add(`v.blk.${i}.ln2.weight`, [nEmbd], 1);
    add(`v.blk.${i}.ln2.bias`, [nEmbd]);
    add(`v.blk.${i}.ffn_up.weight`, [nEmbd, nFf]);
    add(`v.blk.${i}.ffn_up.bias`, [nFf]);
    add(`v.blk.${i}.ffn_down.weight`, [nFf, nEmbd]);
    add(`v.blk.${i}.ffn_down.bias`, [nEmbd]);
  }
  add("mm.0.weight", [nEmbd, textEmbd]);
  add("mm.0.bias", [textEmbd]);
  add("mm.2.weight", [textEmbd, textEmbd]);
  add("mm.2.bias", [textEmbd]);
}

/** A PNG (8-bit RGB) of `width` x `height` whose pixels `color(x, y)` gives as [r, g, b]. */
export function makePng(width: number, height: number, color: (x: number, y: number) => [number, number, number]): Buffer {
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    rows[row] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const [r, g, b] = color(x, y);
      rows[row + 1 + x * 3] = r;
      rows[row + 2 + x * 3] = g;
      rows[row + 3 + x * 3] = b;
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, RGB, deflate, no filter variants, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", header),
    pngChunk("IDAT", deflateSync(rows)),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

export async function writePng(path: string, width: number, height: number, color: (x: number, y: number) => [number, number, number]): Promise<Buffer> {
  const png = makePng(width, height, color);
  await writeFile(path, png);
  return png;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
