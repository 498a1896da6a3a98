// Audio through the projector (libmtmd): on a generated tiny audio model (a tiny llama and a random-weight Whisper
// encoder with Qwen2-Audio's "qwen2a" projector, written by our GGUF writer), the same clip and prompt give the same
// greedy answer through ChatSession (the per-request worker and the batched sequence engine) and through
// /v1/chat/completions with an input_audio part sent by the openai npm client, as through llama.cpp's own
// llama-mtmd-cli built from the same source. Corrupt audio, audio for a vision-only projector, an image for an
// audio-only one and audio for a model without projector are clear errors (400s in the server).
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import OpenAI, { type APIError } from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type ChatMessage, type LlamaModel } from "../src/index.js";
import { dockerV01 } from "./helpers/artifacts.js";
import { MTMD_CLI, mtmdCliAnswer } from "./helpers/mtmd-cli.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { serveEnv, startServe, type ServeProcess } from "./helpers/serve.js";
import { AUDIO_TOKENS_PER_WINDOW, makeTinyAudioModel, makeTinyAudioProjector, makeWav, wavHeader, writeWav } from "./helpers/tiny-audio.js";
import { LLAMA_CPP_SOURCE_DIR } from "./helpers/tiny-model.js";
import { makeTinyProjector, makePng, writePng } from "./helpers/tiny-vision.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const N_PREDICT = 24;
/** One 30 s window of audio takes 750 positions: the context holds two clips and their prompts. */
const CONTEXT = 2048;
/** An MP3 of speech in llama.cpp's source (tools/mtmd/test-2.mp3, what its tests.sh sends to audio models). */
const SPEECH_MP3 = join(LLAMA_CPP_SOURCE_DIR, "tools", "mtmd", "test-2.mp3");

let workDir: string;
let lmPath: string;
let projectorPath: string;
let visionProjectorPath: string;
let model: LlamaModel;
const clips: { name: string; path: string; prompt: string }[] = [];
const expected = new Map<string, string>();

/**
 * What llama-mtmd-cli answers, greedy, to a clip (or media, in order: `--audio` or `--image` and a path each) and a
 * prompt, in a single turn through the model's chat template.
 */
async function mtmdCli(audio: string | string[], prompt: string, projector = projectorPath): Promise<string> {
  return mtmdCliAnswer({ model: lmPath, projector: projector, media: typeof audio === "string" ? ["--audio", audio] : audio, prompt, nPredict: N_PREDICT, contextSize: CONTEXT });
}

function userTurn(audioPath: string, prompt: string): ChatMessage {
  // llama-mtmd-cli puts the media marker before the prompt.
  return { role: "user", content: [{ type: "audio", path: audioPath }, { type: "text", text: prompt }] };
}

async function failure(promise: Promise<unknown>): Promise<LlamaOciError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a LlamaOciError").toBeInstanceOf(LlamaOciError);
  expect((error as Error).message).not.toContain("\n");
  return error as LlamaOciError;
}

beforeAll(async () => {
  expect(existsSync(MTMD_CLI), `${MTMD_CLI} is missing: run 'node scripts/build-native.mjs --tools'`).toBe(true);
  workDir = await makeTempDir("llama-oci-audio");
  lmPath = join(workDir, "tiny-lm.gguf");
  projectorPath = join(workDir, "mmproj-tiny-audio.gguf");
  visionProjectorPath = join(workDir, "mmproj-tiny-vision.gguf");
  await makeTinyAudioModel(lmPath, projectorPath, { lm: { seed: 31, contextLength: CONTEXT } });
  await makeTinyProjector(visionProjectorPath, { textEmbd: 64 });
  const tones = join(workDir, "tones.wav");
  await writeWav(tones, { seed: 3, seconds: 8 });
  // Stereo at 22.05 kHz: libmtmd (miniaudio) mixes it down and resamples it to 16 kHz, on both sides alike.
  const stereo = join(workDir, "stereo.wav");
  await writeWav(stereo, { seed: 4, seconds: 8, sampleRate: 22050, channels: 2 });
  clips.push({ name: "tones", path: tones, prompt: "What do you hear?" }, { name: "stereo", path: stereo, prompt: "Transcribe this" });
  expect(existsSync(SPEECH_MP3), `${SPEECH_MP3} is missing from llama.cpp's source`).toBe(true);
  clips.push({ name: "speech", path: SPEECH_MP3, prompt: "What is said?" });
  for (const clip of clips) expected.set(clip.name, await mtmdCli(clip.path, clip.prompt));
  // The clip decides the answer (so that agreeing with llama-mtmd-cli means the audio got through): another clip
  // with the same prompt answers otherwise.
  expect(await mtmdCli(stereo, clips[0]!.prompt)).not.toBe(expected.get("tones"));
  model = await llama.loadModel(lmPath, { projector: projectorPath, gpuLayers: 0, threads: 1, threadsBatch: 1, contextSize: CONTEXT });
}, 240_000);

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

describe("audio in chats (Node API)", () => {
  test("the projector takes audio (not images); a WAV or MP3 and a prompt give llama-mtmd-cli's greedy answer", async () => {
    expect(model.projector?.audio).toBe(true);
    expect(model.projector?.vision).toBe(false);
    for (const clip of clips) {
      const chat = model.createChat();
      const reply = await chat.send(userTurn(clip.path, clip.prompt), { temperature: 0, maxTokens: N_PREDICT });
      const want = expected.get(clip.name)!;
      expect(want.length, "llama-mtmd-cli generated nothing").toBeGreaterThan(0);
      expect(reply.text.replace(/\n+$/, ""), clip.name).toBe(want);
      // The clip (shorter than 30 s: one window) took its 750 positions in the context, besides the text's.
      const messages = [userTurn(clip.path, clip.prompt)];
      const media = await model.tokenizeWithMedia(model.formatChat(messages).prompt, messages);
      expect(media.tokens.filter((token) => token < 0).length).toBe(AUDIO_TOKENS_PER_WINDOW);
      expect(reply.timings.promptTokens).toBe(media.tokens.length);
      await chat.dispose();
    }
  });

  test("audio bytes and base64 work as a path does; the next turn reuses the cached clip", async () => {
    const clip = clips[0]!;
    const bytes = await readFile(clip.path);
    const chat = model.createChat();
    const first = await chat.send({ role: "user", content: [{ type: "audio", data: new Uint8Array(bytes) }, { type: "text", text: clip.prompt }] }, { temperature: 0, maxTokens: N_PREDICT });
    expect(first.text.replace(/\n+$/, "")).toBe(expected.get(clip.name));
    const second = await chat.send("And now?", { temperature: 0, maxTokens: 4 });
    // The whole first turn (its clip included) stayed in the KV cache.
    expect(second.timings.cachedTokens).toBeGreaterThanOrEqual(first.timings.promptTokens);
    await chat.dispose();

    for (const data of [`data:audio/wav;base64,${bytes.toString("base64")}`, bytes.toString("base64"), bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)]) {
      const other = model.createChat();
      const again = await other.send({ role: "user", content: [{ type: "audio", data }, { type: "text", text: clip.prompt }] }, { temperature: 0, maxTokens: N_PREDICT });
      expect(again.text).toBe(first.text);
      await other.dispose();
    }
  });

  test("on a parallel context (the sequence engine) the answers are llama-mtmd-cli's too, also when two run at once", async () => {
    const parallel = await llama.loadModel(lmPath, { projector: projectorPath, gpuLayers: 0, threads: 1, threadsBatch: 1, contextSize: CONTEXT * 2, parallel: 2 });
    try {
      const pair = clips.slice(0, 2);
      const replies = await Promise.all(pair.map((clip) => parallel.createChat().send(userTurn(clip.path, clip.prompt), { temperature: 0, maxTokens: N_PREDICT })));
      for (const [i, clip] of pair.entries()) expect(replies[i]!.text.replace(/\n+$/, ""), clip.name).toBe(expected.get(clip.name));
      // A conversation's next turn goes to the sequence that holds it, clip and all.
      const clip = clips[2]!;
      const chat = parallel.createChat();
      const first = await chat.send(userTurn(clip.path, clip.prompt), { temperature: 0, maxTokens: N_PREDICT });
      expect(first.text.replace(/\n+$/, "")).toBe(expected.get(clip.name));
      const second = await chat.send("And now?", { temperature: 0, maxTokens: 4 });
      expect(second.timings.cachedTokens).toBeGreaterThanOrEqual(first.timings.promptTokens);
      expect((await parallel.defaultContext()).parallel).toBe(2);
    } finally {
      await parallel.dispose();
    }
  });

  test("corrupt audio is an INVALID_ARGUMENT saying what to give, and the model keeps working", async () => {
    const chat = model.createChat();
    const send = (data: Uint8Array | string) => chat.send({ role: "user", content: [{ type: "audio", data }, { type: "text", text: "Hi" }] }, { maxTokens: 2 });
    // Not audio at all; a WAV header with garbage after it; a WAV cut inside its header; a WAV whose format chunk
    // says zero channels; an MP3 frame header followed by noise.
    const wav = await readFile(clips[0]!.path);
    const zeroChannels = Buffer.from(wav.subarray(0, 4096));
    zeroChannels.writeUInt16LE(0, 22);
    const garbage = Buffer.concat([wav.subarray(0, 12), Buffer.from("this is no format chunk, nor any data at all")]);
    const mp3ish = Buffer.concat([Buffer.from([0xff, 0xfb, 0x90, 0x00]), Buffer.alloc(600, 0x5a)]);
    for (const [name, bytes] of Object.entries({ text: Buffer.from("this is not a sound at all"), garbage, cut: wav.subarray(0, 30), zeroChannels, mp3ish })) {
      const error = await failure(send(bytes));
      expect(error.code, name).toBe("INVALID_ARGUMENT");
      expect(error.message, name).toMatch(/^audio 1 \(\d+ bytes\) cannot be decoded: give a WAV, MP3 or FLAC file/);
    }
    // A WAV that holds no samples.
    const empty = await failure(send(wavHeader(0, 16000, 1)));
    expect(empty.code).toBe("INVALID_ARGUMENT");
    expect(empty.message).toMatch(/^audio 1 /);
    // A picture in an audio part; base64 that is not; a part with neither data nor path.
    const picture = await failure(send(makePng(8, 8, () => [10, 20, 30])));
    expect(picture.code).toBe("INVALID_ARGUMENT");
    expect(picture.message).toMatch(/audio 1 is an image, not audio/);
    expect((await failure(send("%%% not base64 %%%"))).message).toMatch(/the audio is not valid base64/);
    const bare = await failure(chat.send({ role: "user", content: [{ type: "audio" } as never, { type: "text", text: "Hi" }] }));
    expect(bare.code).toBe("INVALID_ARGUMENT");
    expect(bare.message).toMatch(/an audio part needs data \(bytes or base64\) or a path/);
    const missing = await failure(chat.send(userTurn(join(workDir, "nowhere.wav"), "Hi")));
    expect(missing.message).toMatch(/cannot read the audio .*nowhere\.wav/);
    // A WAV whose header claims far more data than it holds is read as far as it goes (as llama-mtmd-cli reads it).
    const overlong = Buffer.from(wav.subarray(0, 44 + 32_000));
    overlong.writeUInt32LE(0x7fffffff, 40);
    const lenient = model.createChat();
    const read = await lenient.send({ role: "user", content: [{ type: "audio", data: overlong }, { type: "text", text: "Hi" }] }, { temperature: 0, maxTokens: 2 });
    expect(read.timings.promptTokens).toBeGreaterThan(AUDIO_TOKENS_PER_WINDOW);
    await lenient.dispose();
    // Still fine, and the failed turns left nothing in the chat's history.
    const clip = clips[0]!;
    const reply = await chat.send(userTurn(clip.path, clip.prompt), { temperature: 0, maxTokens: N_PREDICT });
    expect(reply.text.replace(/\n+$/, "")).toBe(expected.get(clip.name));
    await chat.dispose();
  });

  test("audio to a vision-only projector, an image to this audio-only one, and audio without a projector are INVALID_ARGUMENT", async () => {
    const png = makePng(32, 32, (x, y) => [x * 8, y * 8, 128]);
    const image = await failure(model.createChat().send({ role: "user", content: [{ type: "image", data: png }, { type: "text", text: "Hi" }] }));
    expect(image.code).toBe("INVALID_ARGUMENT");
    expect(image.message).toMatch(/content part 0 is an image, which the projector \(mmproj\) of tiny-lm\.gguf does not take: it takes audio/);
    expect(() => model.formatChat([{ role: "user", content: [{ type: "image", data: png }] }])).toThrow(/does not take: it takes audio/);

    const vision = await llama.loadModel(lmPath, { projector: visionProjectorPath, gpuLayers: 0, threads: 1, contextSize: CONTEXT });
    try {
      expect(vision.projector?.vision).toBe(true);
      expect(vision.projector?.audio).toBe(false);
      const error = await failure(vision.createChat().send(userTurn(clips[0]!.path, "Hi")));
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.message).toMatch(/content part 0 is audio, which the projector \(mmproj\) of tiny-lm\.gguf does not take: it takes images/);
    } finally {
      await vision.dispose();
    }

    const plain = await llama.loadModel(lmPath, { gpuLayers: 0, threads: 1, contextSize: CONTEXT });
    try {
      expect(plain.projector).toBeUndefined();
      const error = await failure(plain.createChat().send(userTurn(clips[0]!.path, "Hi")));
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.message).toMatch(/has no projector \(mmproj\), so it cannot take audio/);
      expect(error.hint).toMatch(/projector option/);
    } finally {
      await plain.dispose();
    }
  });
});

describe("a projector that takes images and audio", () => {
  test("an image and a clip in one message, in either order, answer as llama-mtmd-cli; a part of the wrong kind is refused", async () => {
    const omniPath = join(workDir, "mmproj-tiny-omni.gguf");
    await makeTinyAudioProjector(omniPath, { textEmbd: 64, vision: {} });
    const png = join(workDir, "gradient.png");
    await writePng(png, 32, 32, (x, y) => [x * 8, y * 8, 255 - x * 4]);
    const wav = clips[0]!.path;
    const prompt = "Compare these";
    const imageFirst = await mtmdCli(["--image", png, "--audio", wav], prompt, omniPath);
    const audioFirst = await mtmdCli(["--audio", wav, "--image", png], prompt, omniPath);
    // The order is in the answer, so that agreeing with both means each went where its marker was.
    expect(imageFirst).not.toBe(audioFirst);
    const omni = await llama.loadModel(lmPath, { projector: omniPath, gpuLayers: 0, threads: 1, threadsBatch: 1, contextSize: CONTEXT });
    try {
      expect(omni.projector?.vision).toBe(true);
      expect(omni.projector?.audio).toBe(true);
      const ask = (...media: ({ type: "image"; path: string } | { type: "audio"; path: string })[]) =>
        omni.createChat().send({ role: "user", content: [...media, { type: "text", text: prompt }] }, { temperature: 0, maxTokens: N_PREDICT });
      expect((await ask({ type: "image", path: png }, { type: "audio", path: wav })).text.replace(/\n+$/, "")).toBe(imageFirst);
      expect((await ask({ type: "audio", path: wav }, { type: "image", path: png })).text.replace(/\n+$/, "")).toBe(audioFirst);
      // The part says what it holds: a WAV in an image part (and a PNG in an audio part) is an error, not a guess.
      const wavAsImage = await failure(ask({ type: "image", path: png }, { type: "image", path: wav }));
      expect(wavAsImage.code).toBe("INVALID_ARGUMENT");
      expect(wavAsImage.message).toMatch(/^image 2 is audio, not an image: send it as an audio part/);
      const pngAsAudio = await failure(ask({ type: "audio", path: png }));
      expect(pngAsAudio.message).toMatch(/^audio 1 is an image, not audio: send it as an image part/);
    } finally {
      await omni.dispose();
    }
  });
});

describe("audio through the server (the openai npm client)", () => {
  let registry: RegistryHandle;
  let server: ServeProcess;
  let client: OpenAI;
  let withAudio: string;
  let withVision: string;
  let withoutProjector: string;

  beforeAll(async () => {
    registry = await startRegistry();
    const lm = await readFile(lmPath);
    await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-audio" }, "F32", dockerV01({ ggufs: [lm], mmproj: await readFile(projectorPath) }));
    await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-vision" }, "F32", dockerV01({ ggufs: [lm], mmproj: await readFile(visionProjectorPath) }));
    await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-text" }, "F32", dockerV01({ ggufs: [lm] }));
    withAudio = `${registry.host}/ai/tiny-audio:F32`;
    withVision = `${registry.host}/ai/tiny-vision:F32`;
    withoutProjector = `${registry.host}/ai/tiny-text:F32`;
    server = await startServe(["-c", String(CONTEXT * 2)], serveEnv(workDir));
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    await registry?.stop();
  });

  const audioMessage = (data: string, format: "wav" | "mp3", prompt: string): OpenAI.ChatCompletionMessageParam => ({
    role: "user",
    content: [
      { type: "input_audio", input_audio: { data, format } },
      { type: "text", text: prompt },
    ],
  });
  const base64 = async (path: string) => (await readFile(path)).toString("base64");
  const refusal = async (body: OpenAI.ChatCompletionCreateParamsNonStreaming): Promise<APIError> => {
    const error = await client.chat.completions.create(body).catch((e: unknown) => e);
    expect(error, "expected a 400").toBeInstanceOf(OpenAI.BadRequestError);
    return error as APIError;
  };

  test("/v1/chat/completions takes input_audio (WAV and MP3) and answers as llama-mtmd-cli", async () => {
    for (const clip of clips) {
      const format = clip.path.endsWith(".mp3") ? "mp3" : "wav";
      const completion = await client.chat.completions.create({ model: withAudio, messages: [audioMessage(await base64(clip.path), format, clip.prompt)], temperature: 0, max_tokens: N_PREDICT });
      expect(completion.choices[0]!.message.content!.replace(/\n+$/, ""), clip.name).toBe(expected.get(clip.name));
      expect(completion.usage!.prompt_tokens).toBeGreaterThan(AUDIO_TOKENS_PER_WINDOW);
    }
  });

  test("bad input_audio is a 400 whose param names the field", async () => {
    const wav = await base64(clips[0]!.path);
    const badFormat = await refusal({ model: withAudio, messages: [audioMessage(wav, "ogg" as "wav", "Hi")] });
    expect(badFormat.param).toBe("messages[0].content[0].input_audio.format");
    expect(badFormat.message).toMatch(/input_audio\.format must be one of "wav", "mp3"/);

    const noData = await refusal({ model: withAudio, messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { format: "wav" } as never }] }] });
    expect(noData.param).toBe("messages[0].content[0].input_audio.data");
    expect(noData.message).toMatch(/input_audio\.data is required/);

    const notBase64 = await refusal({ model: withAudio, messages: [audioMessage("*** not base64 ***", "wav", "Hi")] });
    expect(notBase64.param).toBe("messages[0].content[0].input_audio.data");
    expect(notBase64.message).toMatch(/the audio is not valid base64/);

    const empty = await refusal({ model: withAudio, messages: [audioMessage("", "wav", "Hi")] });
    expect(empty.param).toBe("messages[0].content[0].input_audio.data");

    const corrupt = await refusal({ model: withAudio, messages: [{ role: "user", content: [{ type: "text", text: "Listen:" }, { type: "input_audio", input_audio: { data: Buffer.from("RIFF....WAVEgarbage").toString("base64"), format: "wav" } }] }] });
    expect(corrupt.message).toMatch(/audio 1 \(\d+ bytes\) cannot be decoded: give a WAV, MP3 or FLAC file/);
  });

  test("audio for a vision-only projector or a model without projector is a 400 that says why; the server keeps answering", async () => {
    const wav = await base64(clips[0]!.path);
    const vision = await refusal({ model: withVision, messages: [{ role: "user", content: "Listen" }, { role: "assistant", content: "Yes?" }, audioMessage(wav, "wav", "Hi")] });
    expect(vision.param).toBe("messages[2].content[0]");
    expect(vision.message).toMatch(/messages\[2\]\.content\[0\] is audio, which the projector \(mmproj\) of .*tiny-vision.* does not take: it takes images/);

    const plain = await refusal({ model: withoutProjector, messages: [audioMessage(wav, "wav", "Hi")] });
    expect(plain.message).toMatch(/has no projector \(mmproj\), so it cannot take audio/);

    const clip = clips[0]!;
    const completion = await client.chat.completions.create({ model: withAudio, messages: [audioMessage(wav, "wav", clip.prompt)], temperature: 0, max_tokens: N_PREDICT });
    expect(completion.choices[0]!.message.content!.replace(/\n+$/, "")).toBe(expected.get(clip.name));
  });
});

// The WAV writer itself: what libmtmd reads is what was written.
test("makeWav writes a PCM16 RIFF/WAVE file of the asked length, the same bytes for the same seed", () => {
  const wav = makeWav({ seed: 9, seconds: 0.5, sampleRate: 16000, channels: 2 });
  expect(wav.subarray(0, 4).toString("ascii")).toBe("RIFF");
  expect(wav.subarray(8, 12).toString("ascii")).toBe("WAVE");
  expect(wav.readUInt16LE(22)).toBe(2);
  expect(wav.readUInt32LE(24)).toBe(16000);
  expect(wav.readUInt32LE(40)).toBe(8000 * 2 * 2);
  expect(wav.length).toBe(44 + 8000 * 2 * 2);
  expect(makeWav({ seed: 9, seconds: 0.5, sampleRate: 16000, channels: 2 }).equals(wav)).toBe(true);
  expect(makeWav({ seed: 10, seconds: 0.5, sampleRate: 16000, channels: 2 }).equals(wav)).toBe(false);
});
