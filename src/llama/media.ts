/**
 * Images and audio in chats, through llama.cpp's libmtmd: a model's projector (its mmproj GGUF), image and audio
 * parts of messages, and prompts tokenized together with their media. In the formatted prompt each image or audio
 * clip is llama.cpp's media marker (as llama-server renders OpenAI image_url and input_audio parts); libmtmd
 * replaces each marker with the media's embeddings.
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

/**
 * Audio in a message's content, for a projector that takes audio: the bytes of a WAV, MP3 or FLAC file (libmtmd
 * decodes them with miniaudio and resamples them to the projector's rate), or base64 (a data: URL too), or a file.
 */
export interface ChatAudioPart {
  type: "audio";
  /** The audio file's bytes, or their base64 text (a `data:audio/...;base64,` URL is accepted too). */
  data?: Uint8Array | ArrayBuffer | string;
  /** A path to read the audio from, instead of data. */
  path?: string;
}

/** A media part of a message: an image or audio. */
export type ChatMediaPart = ChatImagePart | ChatAudioPart;

/** What a media part holds. */
export type MediaKind = ChatMediaPart["type"];

/** A media part's bytes and kind, as the projector tokenizes them. */
export interface MediaInput {
  kind: MediaKind;
  data: Uint8Array;
}

/** libmtmd's default media marker (mtmd_default_marker()), which the projector is loaded with. */
export const MEDIA_MARKER = "<__media__>";

const NO_PROJECTOR_HINT = "load the model with its projector: the projector option (a mmproj GGUF), or llama.fromDocker() of an artifact with a mmproj layer";

/** A prompt tokenized with its media: text tokens, and placeholders where each image's or clip's embeddings go. */
export class MediaPrompt {
  /** @internal */
  constructor(
    readonly tokens: Int32Array,
    /** @internal */
    readonly native: NativeMediaPromptHandle,
    /** How many media (images and audio clips) the prompt holds. */
    readonly media: number,
  ) {}
}

/** A loaded projector (mmproj) of one model. */
export class ModelProjector {
  readonly path: string;
  /** Whether it takes images. */
  readonly vision: boolean;
  /** Whether it takes audio. */
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

  /** Whether it takes media of this kind. */
  takes(kind: MediaKind): boolean {
    return kind === "audio" ? this.audio : this.vision;
  }

  /** What it takes, in words ("images", "audio", "images and audio"). */
  get takesWhat(): string {
    return [this.vision ? "images" : "", this.audio ? "audio" : ""].filter(Boolean).join(" and ") || "nothing";
  }

  /**
   * Tokenizes a formatted prompt whose media markers stand for `media`, in order (INVALID_ARGUMENT for media that
   * cannot be decoded, or of a kind the projector does not take).
   */
  async tokenize(prompt: string, media: readonly MediaInput[], options: { addSpecial: boolean; parseSpecial: boolean }): Promise<MediaPrompt> {
    if (!this.#native) throw new LlamaOciError("DISPOSED", "this model's projector has been disposed", { hint: "load the model again" });
    try {
      const { tokens, media: native } = await getBinding().tokenizeMedia(this.#native, prompt, [...media], options.addSpecial, options.parseSpecial);
      return new MediaPrompt(tokens, native, media.length);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (/^(image|audio) \d+[ :]|^the prompt's media markers/.test(message)) throw new LlamaOciError("INVALID_ARGUMENT", message, { cause: error });
      throw new LlamaOciError("INFERENCE", `cannot tokenize the prompt with its media: ${message}`, { cause: error });
    }
  }

  dispose(): void {
    if (this.#native) getBinding().disposeProjector(this.#native);
    this.#native = undefined;
  }
}

export function isMediaPart(part: unknown): part is ChatMediaPart {
  if (typeof part !== "object" || part === null) return false;
  const type = (part as { type?: unknown }).type;
  return type === "image" || type === "audio";
}

/** What to give, for a part of this kind. */
function formats(kind: MediaKind): string {
  return kind === "audio" ? "give the bytes of a WAV, MP3 or FLAC file" : "give the bytes of a PNG, JPEG, BMP or GIF image";
}

/** Throws INVALID_ARGUMENT unless `part` is a media part with exactly one of data and path. */
export function checkMediaPart(part: ChatMediaPart, where: string): void {
  const { data, path } = part;
  const what = part.type;
  if ((data === undefined) === (path === undefined)) throw invalid(`${where}: an ${what} part needs data (bytes or base64) or a path, one of them`);
  if (path !== undefined && (typeof path !== "string" || path === "")) throw invalid(`${where}: the ${what}'s path must be a non-empty string`);
  if (data !== undefined && typeof data !== "string" && !(data instanceof Uint8Array) && !(data instanceof ArrayBuffer)) {
    throw invalid(`${where}: the ${what}'s data must be a Uint8Array, an ArrayBuffer or base64 text`);
  }
}

/** The media parts of a conversation, in the order their markers appear in the formatted prompt. */
export function mediaOf(messages: readonly { content?: unknown }[]): ChatMediaPart[] {
  const media: ChatMediaPart[] = [];
  for (const message of messages) {
    if (Array.isArray(message.content)) for (const part of message.content as unknown[]) if (isMediaPart(part)) media.push(part);
  }
  return media;
}

/** The label of each media part in errors, in order: "image 1", "audio 1", "image 2" (numbered by kind). */
export function mediaLabels(media: readonly ChatMediaPart[]): string[] {
  const counts = { image: 0, audio: 0 };
  return media.map((part) => `${part.type} ${++counts[part.type]}`);
}

const DATA_URL = /^data:([^,;]*)(;[^,]*)?,/;

/** The bytes and kind of a media part (its data decoded, or its file read). INVALID_ARGUMENT when there are none. */
export async function mediaInput(part: ChatMediaPart, where: string): Promise<MediaInput> {
  checkMediaPart(part, where);
  const what = part.type;
  let bytes: Uint8Array;
  if (part.path !== undefined) {
    try {
      bytes = await readFile(part.path);
    } catch (error) {
      throw invalid(`${where}: cannot read the ${what} ${part.path}: ${(error as Error).message}`);
    }
  } else if (typeof part.data === "string") {
    bytes = decodeBase64(part.data, where, what);
  } else {
    bytes = part.data instanceof ArrayBuffer ? new Uint8Array(part.data) : part.data!;
  }
  if (bytes.length === 0) throw invalid(`${where}: the ${what} is empty`, formats(part.type));
  return { kind: part.type, data: bytes };
}

/** Base64 (or a base64 data: URL) to bytes; INVALID_ARGUMENT for anything else. `what` names the media in errors. */
export function decodeBase64(text: string, where: string, what = "image"): Uint8Array {
  let body = text.trim();
  const url = DATA_URL.exec(body);
  if (url) {
    if (!(url[2] ?? "").split(";").includes("base64")) throw invalid(`${where}: only base64 data URLs are supported`);
    body = body.slice(url[0].length);
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(body)) {
    throw invalid(`${where}: ${what === "audio" ? "audio is" : "images are"} taken as data, not fetched from URLs`, what === "audio" ? "send the audio as base64 data" : "send the image as a base64 data: URL");
  }
  const compact = body.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(compact)) throw invalid(`${where}: the ${what} is not valid base64`);
  return Buffer.from(compact, compact.includes("-") || compact.includes("_") ? "base64url" : "base64");
}

/**
 * Why `messages` cannot go to a model with this projector (none: undefined): media without a projector, or media
 * of a kind the projector does not take. `where(i, j)` names message i's content part j in the error.
 */
export function mediaError(
  projector: ModelProjector | undefined,
  modelName: string,
  messages: readonly { content?: unknown }[],
  where: (message: number, part: number) => string = (i, j) => `message ${i}: content part ${j}`,
): LlamaOciError | undefined {
  const kinds = new Set<MediaKind>();
  for (const [i, message] of messages.entries()) {
    if (!Array.isArray(message.content)) continue;
    for (const [j, part] of (message.content as unknown[]).entries()) {
      if (!isMediaPart(part)) continue;
      kinds.add(part.type);
      if (projector !== undefined && !projector.takes(part.type)) {
        const kind = part.type === "audio" ? "audio" : "an image";
        return invalid(`${where(i, j)} is ${kind}, which the projector (mmproj) of ${modelName} does not take: it takes ${projector.takesWhat}`);
      }
    }
  }
  if (projector === undefined && kinds.size > 0) return noProjectorError(modelName, kinds.has("audio") ? (kinds.has("image") ? "images or audio" : "audio") : "images");
  return undefined;
}

/** The error for media sent to a model that has no projector. */
export function noProjectorError(modelName: string, what = "images"): LlamaOciError {
  return invalid(`${modelName} has no projector (mmproj), so it cannot take ${what}`, NO_PROJECTOR_HINT);
}
