// Images through the projector (libmtmd): on a generated tiny vision model (a tiny llama and a random-weight LLaVA
// "mlp" CLIP projector written by our GGUF writer), the same image and prompt give the same greedy answer through
// ChatSession (the per-request worker and the batched sequence engine), /v1/chat/completions with an image_url data
// URL and Ollama's /api/chat with images, as through llama.cpp's own llama-mtmd-cli built from the same source.
// A corrupt image and a model without projector are clear errors (400s in the server).
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type ChatMessage, type LlamaModel } from "../src/index.js";
import { dockerV01 } from "./helpers/artifacts.js";
import { MTMD_CLI, mtmdCliAnswer } from "./helpers/mtmd-cli.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { serveEnv, startServe, type ServeProcess } from "./helpers/serve.js";
import { makeTinyVisionModel, writePng } from "./helpers/tiny-vision.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const N_PREDICT = 24;
const CONTEXT = 512;
/** Image positions of the tiny projector: (32 / 8)^2 patches. */
const IMAGE_TOKENS = 16;

let workDir: string;
let lmPath: string;
let projectorPath: string;
let model: LlamaModel;
const images: { name: string; path: string; prompt: string }[] = [];
const expected = new Map<string, string>();

/** What llama-mtmd-cli answers, greedy, to one image and prompt (a single turn through the model's chat template). */
async function mtmdCli(image: string | string[], prompt: string): Promise<string> {
  return mtmdCliAnswer({ model: lmPath, projector: projectorPath, media: (Array.isArray(image) ? image : [image]).flatMap((path) => ["--image", path]), prompt, nPredict: N_PREDICT, contextSize: CONTEXT });
}

function userTurn(imagePath: string, prompt: string): ChatMessage {
  // llama-mtmd-cli puts the image's marker before the prompt.
  return { role: "user", content: [{ type: "image", path: imagePath }, { type: "text", text: prompt }] };
}

beforeAll(async () => {
  expect(existsSync(MTMD_CLI), `${MTMD_CLI} is missing: run 'node scripts/build-native.mjs --tools'`).toBe(true);
  workDir = await makeTempDir("llama-oci-vision");
  lmPath = join(workDir, "tiny-lm.gguf");
  projectorPath = join(workDir, "mmproj-tiny.gguf");
  await makeTinyVisionModel(lmPath, projectorPath, { lm: { seed: 31, contextLength: CONTEXT } });
  const gradient = join(workDir, "gradient.png");
  await writePng(gradient, 32, 32, (x, y) => [x * 8, y * 8, 255 - x * 4]);
  const checker = join(workDir, "checker.png");
  // Not square, and not the projector's size: libmtmd resizes and pads it the same way on both sides.
  await writePng(checker, 50, 36, (x, y) => ((x >> 2) + (y >> 2)) % 2 === 0 ? [250, 20, 30] : [10, 200, 90]);
  images.push({ name: "gradient", path: gradient, prompt: "What is in this picture?" }, { name: "checker", path: checker, prompt: "Describe the colors" });
  for (const image of images) expected.set(image.name, await mtmdCli(image.path, image.prompt));
  // The image decides the answer (so that agreeing with llama-mtmd-cli means the image got through): another image
  // with the same prompt answers otherwise.
  expect(await mtmdCli(checker, images[0]!.prompt)).not.toBe(expected.get("gradient"));
  model = await llama.loadModel(lmPath, { projector: projectorPath, gpuLayers: 0, threads: 1, threadsBatch: 1, contextSize: CONTEXT });
}, 180_000);

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

describe("images in chats (Node API)", () => {
  test("the model has the projector; an image and a prompt give llama-mtmd-cli's greedy answer", async () => {
    expect(model.projector?.vision).toBe(true);
    for (const image of images) {
      const chat = model.createChat();
      const reply = await chat.send(userTurn(image.path, image.prompt), { temperature: 0, maxTokens: N_PREDICT });
      const want = expected.get(image.name)!;
      expect(want.length, "llama-mtmd-cli generated nothing").toBeGreaterThan(0);
      expect(reply.text.replace(/\n+$/, ""), image.name).toBe(want);
      // The image took its positions in the context: the prompt is the text's tokens and the image's.
      const text = model.formatChat([{ role: "user", content: image.prompt }]).prompt;
      const textTokens = (await model.tokenize(text, { addSpecial: true, parseSpecial: true })).length;
      expect(reply.timings.promptTokens).toBe(textTokens + IMAGE_TOKENS);
      await chat.dispose();
    }
  });

  test("two images in one message: llama-mtmd-cli's answer to both, in order", async () => {
    const paths = images.map((image) => image.path);
    const prompt = "Compare these two";
    const want = await mtmdCli(paths, prompt);
    // llama-mtmd-cli puts one marker per image before the prompt, in the order given.
    const chat = model.createChat();
    const reply = await chat.send({ role: "user", content: [...paths.map((path) => ({ type: "image" as const, path })), { type: "text", text: prompt }] }, { temperature: 0, maxTokens: N_PREDICT });
    expect(reply.text.replace(/\n+$/, "")).toBe(want);
    expect(want).not.toBe(await mtmdCli([...paths].reverse(), prompt));
    await chat.dispose();
  });

  test("image bytes and base64 work as a path does; the next turn reuses the cached image", async () => {
    const image = images[0]!;
    const bytes = await readFile(image.path);
    const chat = model.createChat();
    const first = await chat.send({ role: "user", content: [{ type: "image", data: new Uint8Array(bytes) }, { type: "text", text: image.prompt }] }, { temperature: 0, maxTokens: N_PREDICT });
    expect(first.text.replace(/\n+$/, "")).toBe(expected.get(image.name));
    const second = await chat.send("And now?", { temperature: 0, maxTokens: 4 });
    // The whole first turn (its image included) stayed in the KV cache.
    expect(second.timings.cachedTokens).toBeGreaterThanOrEqual(first.timings.promptTokens);
    await chat.dispose();

    const other = model.createChat();
    const again = await other.send({ role: "user", content: [{ type: "image", data: `data:image/png;base64,${bytes.toString("base64")}` }, { type: "text", text: image.prompt }] }, { temperature: 0, maxTokens: N_PREDICT });
    expect(again.text).toBe(first.text);
    await other.dispose();
  });

  test("on a parallel context (the sequence engine) the answers are llama-mtmd-cli's too, also when two run at once", async () => {
    const parallel = await llama.loadModel(lmPath, { projector: projectorPath, gpuLayers: 0, threads: 1, threadsBatch: 1, contextSize: CONTEXT * 2, parallel: 2 });
    try {
      const replies = await Promise.all(images.map((image) => parallel.createChat().send(userTurn(image.path, image.prompt), { temperature: 0, maxTokens: N_PREDICT })));
      for (const [i, image] of images.entries()) expect(replies[i]!.text.replace(/\n+$/, ""), image.name).toBe(expected.get(image.name));
      // A conversation's next turn goes to the sequence that holds it, image and all.
      const image = images[0]!;
      const chat = parallel.createChat();
      const first = await chat.send(userTurn(image.path, image.prompt), { temperature: 0, maxTokens: N_PREDICT });
      const second = await chat.send("And now?", { temperature: 0, maxTokens: 4 });
      expect(second.timings.cachedTokens).toBeGreaterThanOrEqual(first.timings.promptTokens);
      // The chats ran on the model's default context, whose two sequences the sequence engine drives.
      expect((await parallel.defaultContext()).parallel).toBe(2);
    } finally {
      await parallel.dispose();
    }
  });

  test("a corrupt image is an INVALID_ARGUMENT saying what to give, and the model keeps working", async () => {
    const chat = model.createChat();
    const error = await chat.send({ role: "user", content: [{ type: "image", data: Buffer.from("this is not a picture at all") }, { type: "text", text: "Hi" }] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaOciError);
    expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
    expect((error as Error).message).toMatch(/image 1 .*cannot be decoded: give a PNG, JPEG/);
    expect((error as Error).message).not.toContain("\n");
    const truncated = (await readFile(images[0]!.path)).subarray(0, 40);
    const cut = await chat.send({ role: "user", content: [{ type: "image", data: truncated }, { type: "text", text: "Hi" }] }).catch((e: unknown) => e);
    expect((cut as LlamaOciError).code).toBe("INVALID_ARGUMENT");
    const bad = await chat.send({ role: "user", content: [{ type: "image" } as never, { type: "text", text: "Hi" }] }).catch((e: unknown) => e);
    expect((bad as LlamaOciError).code).toBe("INVALID_ARGUMENT");
    const image = images[0]!;
    const reply = await chat.send(userTurn(image.path, image.prompt), { temperature: 0, maxTokens: N_PREDICT });
    expect(reply.text.replace(/\n+$/, "")).toBe(expected.get(image.name));
    await chat.dispose();
  });

  test("a model without a projector refuses images with INVALID_ARGUMENT naming the projector option", async () => {
    const plain = await llama.loadModel(lmPath, { gpuLayers: 0, threads: 1, contextSize: CONTEXT });
    try {
      expect(plain.projector).toBeUndefined();
      const error = await plain.createChat().send(userTurn(images[0]!.path, "Hi")).catch((e: unknown) => e);
      expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(/has no projector \(mmproj\), so it cannot take images/);
      expect((error as LlamaOciError).hint).toMatch(/projector option/);
      expect(() => plain.formatChat([userTurn(images[0]!.path, "Hi")])).toThrow(/has no projector/);
    } finally {
      await plain.dispose();
    }
  });

  test("a projector for another embedding width is a MODEL_LOAD error", async () => {
    const wide = join(workDir, "mmproj-wide.gguf");
    const { makeTinyProjector } = await import("./helpers/tiny-vision.js");
    await makeTinyProjector(wide, { textEmbd: 96 });
    const error = await llama.loadModel(lmPath, { projector: wide, gpuLayers: 0, threads: 1, contextSize: CONTEXT }).catch((e: unknown) => e);
    expect((error as LlamaOciError).code).toBe("MODEL_LOAD");
    expect((error as Error).message).toMatch(/cannot load the projector .*mmproj-wide\.gguf/);
  });
});

describe("images through the server", () => {
  let registry: RegistryHandle;
  let server: ServeProcess;
  let withProjector: string;
  let withoutProjector: string;

  beforeAll(async () => {
    registry = await startRegistry();
    const lm = await readFile(lmPath);
    await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-vision" }, "F32", dockerV01({ ggufs: [lm], mmproj: await readFile(projectorPath) }));
    await pushArtifact({ registryUrl: registry.url, repository: "ai/tiny-text" }, "F32", dockerV01({ ggufs: [lm] }));
    withProjector = `${registry.host}/ai/tiny-vision:F32`;
    withoutProjector = `${registry.host}/ai/tiny-text:F32`;
    server = await startServe(["-c", String(CONTEXT * 4)], serveEnv(workDir));
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    await registry?.stop();
  });

  const post = async (path: string, body: object) => {
    const response = await fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as { choices?: { message: { content: string } }[]; message?: { content: string } } };
  };
  const dataUrl = async (path: string) => `data:image/png;base64,${(await readFile(path)).toString("base64")}`;

  test("/v1/chat/completions takes an image_url data URL and answers as llama-mtmd-cli", async () => {
    for (const image of images) {
      const { status, body } = await post("/v1/chat/completions", {
        model: withProjector,
        messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: await dataUrl(image.path) } }, { type: "text", text: image.prompt }] }],
        temperature: 0,
        max_tokens: N_PREDICT,
      });
      expect(status, JSON.stringify(body)).toBe(200);
      expect(body.choices![0]!.message.content.replace(/\n+$/, ""), image.name).toBe(expected.get(image.name));
    }
  });

  test("/api/chat takes Ollama's base64 images and answers as llama-mtmd-cli", async () => {
    const image = images[1]!;
    const { status, body } = await post("/api/chat", {
      model: withProjector,
      messages: [{ role: "user", content: image.prompt, images: [(await readFile(image.path)).toString("base64")] }],
      stream: false,
      options: { temperature: 0, num_predict: N_PREDICT },
    });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.message!.content.replace(/\n+$/, "")).toBe(expected.get(image.name));
  });

  test("/api/generate takes Ollama's base64 images before the prompt and answers as /api/chat and llama-mtmd-cli", async () => {
    const image = images[0]!;
    const data = (await readFile(image.path)).toString("base64");
    const answer = await post("/api/generate", { model: withProjector, prompt: image.prompt, images: [data], stream: false, options: { temperature: 0, num_predict: N_PREDICT } });
    const body = answer.body as { response?: string; done?: boolean; context?: number[]; prompt_eval_count?: number };
    expect(answer.status, JSON.stringify(body)).toBe(200);
    expect(body.done).toBe(true);
    expect(body.response!.replace(/\n+$/, "")).toBe(expected.get(image.name));
    // The image's positions are no tokens: no context to send back.
    expect(body.context).toBeUndefined();
    expect(body.prompt_eval_count).toBeGreaterThan(0);

    // raw (no template to place the image), context (a conversation of tokens) and a corrupt image: 400s naming images.
    for (const [extra, message] of [
      [{ raw: true }, /images need the model's chat template: send them without raw/],
      [{ context: [1, 2, 3] }, /images cannot be combined with context/],
      [{ images: [data, "bm90IGFuIGltYWdl"] }, /cannot be decoded/],
    ] as const) {
      const bad = await post("/api/generate", { model: withProjector, prompt: "Hi", images: [data], stream: false, ...extra });
      const error = bad.body as { error?: string };
      expect(bad.status, JSON.stringify(error)).toBe(400);
      expect(error.error).toMatch(message);
    }
  });

  test("a corrupt image and a model without projector are 400s that say why", async () => {
    const corrupt = await post("/v1/chat/completions", {
      model: withProjector,
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${Buffer.from("garbage bytes").toString("base64")}` } }, { type: "text", text: "Hi" }] }],
      max_tokens: 4,
    });
    expect(corrupt.status).toBe(400);
    expect(JSON.stringify(corrupt.body)).toMatch(/cannot be decoded: give a PNG, JPEG/);
    const remote = await post("/v1/chat/completions", {
      model: withProjector,
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://example.com/cat.png" } }] }],
    });
    expect(remote.status).toBe(400);
    expect(JSON.stringify(remote.body)).toMatch(/data: URL/);
    const ollamaCorrupt = await post("/api/chat", { model: withProjector, messages: [{ role: "user", content: "Hi", images: ["bm90IGFuIGltYWdl"] }], stream: false });
    expect(ollamaCorrupt.status).toBe(400);
    expect(JSON.stringify(ollamaCorrupt.body)).toMatch(/cannot be decoded/);

    const image = await dataUrl(images[0]!.path);
    const plain = await post("/v1/chat/completions", { model: withoutProjector, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: image } }] }] });
    expect(plain.status).toBe(400);
    expect(JSON.stringify(plain.body)).toMatch(/has no projector \(mmproj\), so it cannot take images/);
    const ollamaPlain = await post("/api/chat", { model: withoutProjector, messages: [{ role: "user", content: "Hi", images: [image.split(",")[1]] }], stream: false });
    expect(ollamaPlain.status).toBe(400);
    expect(JSON.stringify(ollamaPlain.body)).toMatch(/has no projector/);
    // The server is still up and answers text.
    const text = await post("/v1/chat/completions", { model: withoutProjector, messages: [{ role: "user", content: "Hi" }], max_tokens: 2 });
    expect(text.status).toBe(200);
  });
});
