/**
 * A tiny audio model for the tests: a tiny llama (tiny-model.ts) and a random-weight audio projector GGUF in the
 * layout libmtmd loads (deps/llama.cpp/tools/mtmd/clip.cpp, clip-impl.h, models/whisper-enc.cpp): the "qwen2a"
 * projector type (Qwen2-Audio's), the simplest of the Whisper-encoder ones: two 1-D convolutions over the log-mel
 * spectrogram (the second of stride 2), a few transformer layers, a 2x average pool and one linear layer whose
 * output width is the language model's embedding width. libmtmd's Whisper preprocessor cuts the audio into 30 s
 * windows of 3000 mel frames, so each window (a clip shorter than 30 s is one) takes 3000 / 2 / 2 = 750 positions,
 * between the "<|audio_bos|>" and "<|audio_eos|>" text libmtmd puts around it. Also small WAV files (PCM16), written
 * here from a seeded synthetic waveform.
 */
import { writeFile } from "node:fs/promises";
import { GgmlType, GgufValueType } from "../../src/gguf/types.js";
import { GgufWriter } from "../../src/gguf/writer.js";
import { makeTinyLlama, randomWeights, type TinyModelOptions } from "./tiny-model.js";
import { addTinyVisionEncoder, TINY_VISION_TEMPLATE, type TinyProjectorOptions } from "./tiny-vision.js";

/** Positions of one 30 s window of audio (3000 mel frames, halved by the stride-2 convolution and the pool). */
export const AUDIO_TOKENS_PER_WINDOW = 750;
/** The Whisper preprocessor's sample rate (clip.cpp sets 16 kHz for the Whisper-encoder projectors). */
export const AUDIO_SAMPLE_RATE = 16000;

export interface TinyAudioProjectorOptions {
  seed?: number;
  /** The language model's embedding width (the projector's output). Default 64, tiny-model's default. */
  textEmbd?: number;
  /** Mel bins of the spectrogram (the first convolution's input channels). Default 128, as Qwen2-Audio's. */
  nMel?: number;
  nEmbd?: number;
  nHead?: number;
  nFf?: number;
  nLayer?: number;
}

export async function makeTinyAudioModel(
  lmPath: string,
  projectorPath: string,
  options: { lm?: TinyModelOptions; projector?: TinyAudioProjectorOptions } = {},
): Promise<void> {
  const lm = { nEmbd: 64, chatTemplate: TINY_VISION_TEMPLATE, ...options.lm };
  await makeTinyLlama(lmPath, lm);
  await makeTinyAudioProjector(projectorPath, { textEmbd: lm.nEmbd, ...options.projector });
}

/**
 * Writes the audio projector; with `vision`, a projector that takes images too (LLaVA's "mlp" vision encoder of
 * tiny-vision.ts beside the audio one, each with its own projector type, as mixed-modality projectors are written).
 */
export async function makeTinyAudioProjector(path: string, options: TinyAudioProjectorOptions & { vision?: TinyProjectorOptions } = {}): Promise<void> {
  const w = new GgufWriter();
  w.addMetadata("general.architecture", GgufValueType.STRING, "clip")
    .addMetadata("general.name", GgufValueType.STRING, options.vision ? "tiny-omni" : "tiny-whisper")
    .addMetadata("general.file_type", GgufValueType.UINT32, 0);
  if (options.vision) {
    w.addMetadata("clip.vision.projector_type", GgufValueType.STRING, "mlp").addMetadata("clip.audio.projector_type", GgufValueType.STRING, "qwen2a");
    addTinyVisionEncoder(w, { textEmbd: options.textEmbd, ...options.vision });
  } else {
    w.addMetadata("clip.projector_type", GgufValueType.STRING, "qwen2a");
  }
  addTinyAudioEncoder(w, options);
  await w.write(path);
}

/** The audio encoder's metadata (but the projector type) and tensors: a.* and the linear projector, mm.a.fc. */
export function addTinyAudioEncoder(w: GgufWriter, options: TinyAudioProjectorOptions = {}): void {
  const seed = options.seed ?? 11;
  const textEmbd = options.textEmbd ?? 64;
  const nMel = options.nMel ?? 128;
  const nEmbd = options.nEmbd ?? 32;
  const nHead = options.nHead ?? 4;
  const nFf = options.nFf ?? 64;
  const nLayer = options.nLayer ?? 2;
  // The encoder's positions: 3000 mel frames after the stride-2 convolution (whisper-enc.cpp asserts at least these).
  const nPositions = 1500;

  w.addMetadata("clip.has_audio_encoder", GgufValueType.BOOL, true)
    .addMetadata("clip.audio.num_mel_bins", GgufValueType.UINT32, nMel)
    .addMetadata("clip.audio.embedding_length", GgufValueType.UINT32, nEmbd)
    .addMetadata("clip.audio.feed_forward_length", GgufValueType.UINT32, nFf)
    .addMetadata("clip.audio.block_count", GgufValueType.UINT32, nLayer)
    .addMetadata("clip.audio.projection_dim", GgufValueType.UINT32, textEmbd)
    .addMetadata("clip.audio.attention.head_count", GgufValueType.UINT32, nHead)
    .addMetadata("clip.audio.attention.layer_norm_epsilon", GgufValueType.FLOAT32, 1e-5);

  const add = (name: string, shape: number[], center = 0): void => {
    w.addTensor(name, shape, GgmlType.F32, randomWeights(seed, name, shape.reduce((a, b) => a * b, 1), center));
  };
  // ggml order: shape[0] is the contiguous dimension (a matrix is [inputs, outputs]; a 1-D convolution's kernel is
  // [width, input channels, output channels], its bias [1, channels] to broadcast over the frames).
  add("a.conv1d.1.weight", [3, nMel, nEmbd]);
  add("a.conv1d.1.bias", [1, nEmbd]);
  add("a.conv1d.2.weight", [3, nEmbd, nEmbd]);
  add("a.conv1d.2.bias", [1, nEmbd]);
  add("a.position_embd.weight", [nEmbd, nPositions]);
  for (let i = 0; i < nLayer; i++) {
    // Whisper's key projection has no bias (whisper-enc.cpp asserts that).
    add(`a.blk.${i}.attn_q.weight`, [nEmbd, nEmbd]);
    add(`a.blk.${i}.attn_q.bias`, [nEmbd]);
    add(`a.blk.${i}.attn_k.weight`, [nEmbd, nEmbd]);
    add(`a.blk.${i}.attn_v.weight`, [nEmbd, nEmbd]);
    add(`a.blk.${i}.attn_v.bias`, [nEmbd]);
    add(`a.blk.${i}.attn_out.weight`, [nEmbd, nEmbd]);
    add(`a.blk.${i}.attn_out.bias`, [nEmbd]);
    add(`a.blk.${i}.ln1.weight`, [nEmbd], 1);
    add(`a.blk.${i}.ln1.bias`, [nEmbd]);
    add(`a.blk.${i}.ln2.weight`, [nEmbd], 1);
    add(`a.blk.${i}.ln2.bias`, [nEmbd]);
    add(`a.blk.${i}.ffn_up.weight`, [nEmbd, nFf]);
    add(`a.blk.${i}.ffn_up.bias`, [nFf]);
    add(`a.blk.${i}.ffn_down.weight`, [nFf, nEmbd]);
    add(`a.blk.${i}.ffn_down.bias`, [nEmbd]);
  }
  add("a.post_ln.weight", [nEmbd], 1);
  add("a.post_ln.bias", [nEmbd]);
  add("mm.a.fc.weight", [nEmbd, textEmbd]);
  add("mm.a.fc.bias", [textEmbd]);
}

export interface WavOptions {
  seed?: number;
  seconds?: number;
  sampleRate?: number;
  channels?: number;
}

/**
 * A WAV file (PCM16, little-endian): a seeded mix of a few tones with a slow tremolo and some noise, the same bytes
 * for the same options. Default 2 s at 16 kHz, mono.
 */
export function makeWav(options: WavOptions = {}): Buffer {
  const seed = options.seed ?? 1;
  const sampleRate = options.sampleRate ?? AUDIO_SAMPLE_RATE;
  const channels = options.channels ?? 1;
  const frames = Math.round((options.seconds ?? 2) * sampleRate);
  const random = mulberry32(seed);
  const tones = Array.from({ length: 3 }, () => ({ hz: 120 + random() * 2400, amplitude: 0.1 + random() * 0.2, phase: random() * 2 * Math.PI }));
  const tremolo = 0.5 + random() * 3;
  const data = Buffer.alloc(frames * channels * 2);
  for (let i = 0; i < frames; i++) {
    const t = i / sampleRate;
    let value = 0;
    for (const tone of tones) value += tone.amplitude * Math.sin(2 * Math.PI * tone.hz * t + tone.phase);
    value *= 0.6 + 0.4 * Math.sin(2 * Math.PI * tremolo * t);
    for (let c = 0; c < channels; c++) {
      const sample = Math.max(-1, Math.min(1, value * (1 - 0.2 * c) + (random() - 0.5) * 0.05));
      data.writeInt16LE(Math.round(sample * 32767), (i * channels + c) * 2);
    }
  }
  return Buffer.concat([wavHeader(data.length, sampleRate, channels), data]);
}

export async function writeWav(path: string, options: WavOptions = {}): Promise<Buffer> {
  const wav = makeWav(options);
  await writeFile(path, wav);
  return wav;
}

/** The 44-byte RIFF/WAVE header of PCM16 data of `dataBytes` bytes. */
export function wavHeader(dataBytes: number, sampleRate: number, channels: number): Buffer {
  const header = Buffer.alloc(44);
  header.write("RIFF", 0, "ascii");
  header.writeUInt32LE(36 + dataBytes, 4);
  header.write("WAVE", 8, "ascii");
  header.write("fmt ", 12, "ascii");
  header.writeUInt32LE(16, 16); // fmt chunk size
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(channels, 22);
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * channels * 2, 28); // byte rate
  header.writeUInt16LE(channels * 2, 32); // block align
  header.writeUInt16LE(16, 34); // bits per sample
  header.write("data", 36, "ascii");
  header.writeUInt32LE(dataBytes, 40);
  return header;
}

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
