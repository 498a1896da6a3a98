/**
 * Images in chats, through llama.cpp's libmtmd: a model's projector (its mmproj GGUF), image parts of messages, and
 * prompts tokenized together with their images. In the formatted prompt each image is llama.cpp's media marker
 * (as llama-server renders OpenAI image_url parts); libmtmd replaces each marker with the image's embeddings.
 */
import { readFile } from "node:fs/promises";
import { LlamaOciError } from "../errors.js";
import { getBinding } from "./binding.js";
import type { NativeMediaPromptHandle, NativeModel, NativeProjectorHandle } from "./native-types.js";
import { invalid } from "./options.js";

/** An image in a message's content: its bytes (PNG, JPEG, BMP, GIF), or base64 (a data: URL too), or a file. */
export interface ChatImagePart {
  type: "image";
  /** The image file's bytes, or their base64 text (a `data:image/...;base64,` URL is accepted too). */
  data?: Uint8Array | ArrayBuffer | string;
  /** A path to read the image from, instead of data. */
  path?: string;
}

/** libmtmd's default media marker (mtmd_default_marker()), which the projector is loaded with. */
export const MEDIA_MARKER = "<__media__>";

const NO_PROJECTOR_HINT = "load the model with its projector: the projector option (a mmproj GGUF), or llama.fromDocker() of an artifact with a mmproj layer";

/** A prompt tokenized with its images: text tokens, and placeholders where each image's embeddings go. */
export class MediaPrompt {
  /** @internal */
  constructor(
    readonly tokens: Int32Array,
    /** @internal */
    readonly native: NativeMediaPromptHandle,
    readonly images: number,
  ) {}
}

/** A loaded projector (mmproj) of one model. */
export class ModelProjector {
  readonly path: string;
  /** Whether it takes images (and audio). */
  readonly vision: boolean;
  readonly audio: boolean;
  #native: NativeProjectorHandle | undefined;

  private constructor(path: string, native: NativeProjectorHandle) {
    this.path = path;
    this.#native = native;
    const info = getBinding().projectorInfo(native);
    this.vision = info.vision;
    this.audio = info.audio;
  }

  /** Loads `path` for `model` on a worker thread; MODEL_LOAD when it cannot (wrong file, another model's width). */
  static async load(model: NativeModel, path: string, options: { threads?: number; useGpu: boolean }): Promise<ModelProjector> {
    const binding = getBinding();
    if (binding.mediaMarker() !== MEDIA_MARKER) throw new LlamaOciError("NATIVE_UNAVAILABLE", `libmtmd's media marker is ${binding.mediaMarker()}, not ${MEDIA_MARKER}`);
    try {
      return new ModelProjector(path, await binding.loadProjector(model, path, { threads: options.threads ?? 0, useGpu: options.useGpu }));
    } catch (error) {
      throw new LlamaOciError("MODEL_LOAD", error instanceof Error ? error.message : String(error), { cause: error });
    }
  }

  /** Tokenizes a formatted prompt whose media markers stand for `images`, in order (INVALID_ARGUMENT for a bad image). */
  async tokenize(prompt: string, images: readonly Uint8Array[], options: { addSpecial: boolean; parseSpecial: boolean }): Promise<MediaPrompt> {
    if (!this.#native) throw new LlamaOciError("DISPOSED", "this model's projector has been disposed", { hint: "load the model again" });
    try {
      const { tokens, media } = await getBinding().tokenizeMedia(this.#native, prompt, [...images], options.addSpecial, options.parseSpecial);
      return new MediaPrompt(tokens, media, images.length);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (/^(image|media) \d+ |^the prompt's media markers/.test(message)) throw new LlamaOciError("INVALID_ARGUMENT", message, { cause: error });
      throw new LlamaOciError("INFERENCE", `cannot tokenize the prompt with its images: ${message}`, { cause: error });
    }
  }

  dispose(): void {
    if (this.#native) getBinding().disposeProjector(this.#native);
    this.#native = undefined;
  }
}

export function isImagePart(part: unknown): part is ChatImagePart {
  return typeof part === "object" && part !== null && (part as { type?: unknown }).type === "image";
}

/** Throws INVALID_ARGUMENT unless `part` is an image part with exactly one of data and path. */
export function checkImagePart(part: ChatImagePart, where: string): void {
  const { data, path } = part;
  if ((data === undefined) === (path === undefined)) throw invalid(`${where}: an image part needs data (bytes or base64) or a path, one of them`);
  if (path !== undefined && (typeof path !== "string" || path === "")) throw invalid(`${where}: the image's path must be a non-empty string`);
  if (data !== undefined && typeof data !== "string" && !(data instanceof Uint8Array) && !(data instanceof ArrayBuffer)) {
    throw invalid(`${where}: the image's data must be a Uint8Array, an ArrayBuffer or base64 text`);
  }
}

/** The image parts of a conversation, in the order their markers appear in the formatted prompt. */
export function imagesOf(messages: readonly { content?: unknown }[]): ChatImagePart[] {
  const images: ChatImagePart[] = [];
  for (const message of messages) {
    if (Array.isArray(message.content)) for (const part of message.content as unknown[]) if (isImagePart(part)) images.push(part);
  }
  return images;
}

const DATA_URL = /^data:([^,;]*)(;[^,]*)?,/;

/** The bytes of an image part (its data decoded, or its file read). INVALID_ARGUMENT when there are none. */
export async function imageBytes(part: ChatImagePart, where: string): Promise<Uint8Array> {
  checkImagePart(part, where);
  let bytes: Uint8Array;
  if (part.path !== undefined) {
    try {
      bytes = await readFile(part.path);
    } catch (error) {
      throw invalid(`${where}: cannot read the image ${part.path}: ${(error as Error).message}`);
    }
  } else if (typeof part.data === "string") {
    bytes = decodeBase64(part.data, where);
  } else {
    bytes = part.data instanceof ArrayBuffer ? new Uint8Array(part.data) : part.data!;
  }
  if (bytes.length === 0) throw invalid(`${where}: the image is empty`, "give the bytes of a PNG, JPEG, BMP or GIF image");
  return bytes;
}

/** Base64 (or a base64 data: URL) to bytes; INVALID_ARGUMENT for anything else. */
export function decodeBase64(text: string, where: string): Uint8Array {
  let body = text.trim();
  const url = DATA_URL.exec(body);
  if (url) {
    if (!(url[2] ?? "").split(";").includes("base64")) throw invalid(`${where}: only base64 data URLs are supported`);
    body = body.slice(url[0].length);
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(body)) {
    throw invalid(`${where}: images are taken as data, not fetched from URLs`, "send the image as a base64 data: URL");
  }
  const compact = body.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(compact)) throw invalid(`${where}: the image is not valid base64`);
  return Buffer.from(compact, compact.includes("-") || compact.includes("_") ? "base64url" : "base64");
}

/** The error for images sent to a model that has no projector. */
export function noProjectorError(modelName: string): LlamaOciError {
  return invalid(`${modelName} has no projector (mmproj), so it cannot take images`, NO_PROJECTOR_HINT);
}
