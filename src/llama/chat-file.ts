/**
 * The file chat.save() writes and llama.restoreChat() reads: a conversation (its history and settings), the tokens
 * its sequence of the KV cache holds and that sequence's state (llama_state_seq_get_data), so that the next turn
 * evaluates only the new message. Layout (integers little-endian):
 *
 *   "LLOCCHAT"  8 bytes      magic
 *   version     uint32       CHAT_FILE_VERSION
 *   headerSize  uint32       then that many bytes of UTF-8 JSON: ChatFileHeader
 *   tokens      int32 x header.tokenCount
 *   state       header.stateBytes bytes
 *   checksum    32 bytes     SHA-256 of everything before it
 *
 * A file from another model is refused (header.model.fingerprint), as is one that is truncated, corrupt (the
 * checksum) or of another format version, each with its own message (code CHAT_FILE).
 */
import { createHash, randomBytes } from "node:crypto";
import { open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { LlamaOciError } from "../errors.js";
import type { ChatMessage } from "./chat-format.js";

export const CHAT_FILE_VERSION = 1;
const MAGIC = Buffer.from("LLOCCHAT", "latin1");
const PREFIX_BYTES = MAGIC.length + 8;
const CHECKSUM_BYTES = 32;
/** Bytes of the GGUF read, at evenly spaced offsets, into its fingerprint (with its size and metadata). */
const SAMPLE_COUNT = 16;
const SAMPLE_BYTES = 64 * 1024;

/** What identifies a model file well enough to refuse a saved state from another one, without hashing gigabytes. */
export interface ModelFingerprint {
  /** "sha256:<hex>" of the file size, every GGUF metadata key and value, and 16 samples of 64 KiB of the file. */
  fingerprint: string;
  sizeBytes: number;
  /** llama_model_desc, e.g. "llama 135M Q4_0": for the error message. */
  description: string;
  /** The artifact's digest when the model came from a registry (informational). */
  digest?: string;
}

export interface ChatFileHeader {
  format: "llama-oci-chat";
  version: number;
  savedAt: string;
  model: ModelFingerprint;
  /** The whole conversation, system prompt first when there is one. */
  history: ChatMessage[];
  /** Index in history of the first message after the system prompt that is still in the context (older were dropped). */
  windowStart: number;
  systemPrompt?: string;
  chatTemplate?: string;
  contextShift?: boolean;
  /** The context size the state was saved from. */
  contextSize: number;
  tokenCount: number;
  stateBytes: number;
}

export interface ChatFile {
  header: ChatFileHeader;
  tokens: Int32Array;
  state: Uint8Array;
}

function fileError(path: string, problem: string, hint?: string): LlamaOciError {
  return new LlamaOciError("CHAT_FILE", `${path}: ${problem}`, { hint });
}

/** Writes the file next to its final name, then renames it over, so that a crash never leaves half a file. */
export async function writeChatFile(path: string, header: Omit<ChatFileHeader, "format" | "version" | "tokenCount" | "stateBytes">, tokens: Int32Array, state: Uint8Array): Promise<void> {
  const full: ChatFileHeader = { format: "llama-oci-chat", version: CHAT_FILE_VERSION, ...header, tokenCount: tokens.length, stateBytes: state.byteLength };
  const json = Buffer.from(JSON.stringify(full), "utf8");
  const prefix = Buffer.alloc(PREFIX_BYTES);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt32LE(CHAT_FILE_VERSION, MAGIC.length);
  prefix.writeUInt32LE(json.length, MAGIC.length + 4);
  const tokenBytes = Buffer.alloc(tokens.length * 4);
  for (let i = 0; i < tokens.length; i++) tokenBytes.writeInt32LE(tokens[i]!, i * 4);
  const body = [prefix, json, tokenBytes, Buffer.from(state.buffer, state.byteOffset, state.byteLength)];
  const hash = createHash("sha256");
  for (const part of body) hash.update(part);
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    await writeFile(temporary, Buffer.concat([...body, hash.digest()]));
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw new LlamaOciError("CHAT_FILE", `cannot write the chat to ${path}: ${(error as Error).message}`, { cause: error });
  }
}

export async function readChatFile(path: string): Promise<ChatFile> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new LlamaOciError("NOT_FOUND", `saved chat not found: ${path}`);
    throw new LlamaOciError("CHAT_FILE", `cannot read the saved chat ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (bytes.length < PREFIX_BYTES || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw fileError(path, "this is not a chat saved by llama-oci (chat.save())");
  }
  const version = bytes.readUInt32LE(MAGIC.length);
  if (version !== CHAT_FILE_VERSION) {
    throw fileError(path, `the chat was saved in format version ${version}; this llama-oci reads version ${CHAT_FILE_VERSION}`, version > CHAT_FILE_VERSION ? "restore it with the newer llama-oci that saved it" : undefined);
  }
  if (bytes.length < PREFIX_BYTES + CHECKSUM_BYTES) throw fileError(path, "the file is truncated");
  const content = bytes.subarray(0, bytes.length - CHECKSUM_BYTES);
  const checksum = bytes.subarray(bytes.length - CHECKSUM_BYTES);
  if (!createHash("sha256").update(content).digest().equals(checksum)) {
    throw fileError(path, "the file is truncated or corrupt (its checksum does not match)");
  }
  const headerSize = bytes.readUInt32LE(MAGIC.length + 4);
  if (PREFIX_BYTES + headerSize > content.length) throw fileError(path, "the file is corrupt (its header runs past its end)");
  let header: ChatFileHeader;
  try {
    header = JSON.parse(content.subarray(PREFIX_BYTES, PREFIX_BYTES + headerSize).toString("utf8")) as ChatFileHeader;
  } catch {
    throw fileError(path, "the file is corrupt (its header is not JSON)");
  }
  checkHeader(path, header);
  const tokensStart = PREFIX_BYTES + headerSize;
  const stateStart = tokensStart + header.tokenCount * 4;
  if (stateStart + header.stateBytes !== content.length) throw fileError(path, "the file is corrupt (its sizes do not add up)");
  const tokens = new Int32Array(header.tokenCount);
  for (let i = 0; i < tokens.length; i++) tokens[i] = content.readInt32LE(tokensStart + i * 4);
  return { header, tokens, state: new Uint8Array(content.subarray(stateStart, stateStart + header.stateBytes)) };
}

function checkHeader(path: string, header: ChatFileHeader): void {
  const count = (n: unknown) => typeof n === "number" && Number.isInteger(n) && n >= 0;
  const ok =
    typeof header === "object" &&
    header !== null &&
    header.format === "llama-oci-chat" &&
    typeof header.model?.fingerprint === "string" &&
    Array.isArray(header.history) &&
    header.history.every((m) => typeof m?.role === "string" && (typeof m.content === "string" || Array.isArray(m.content))) &&
    count(header.windowStart) &&
    count(header.contextSize) &&
    count(header.tokenCount) &&
    count(header.stateBytes) &&
    (header.systemPrompt === undefined || typeof header.systemPrompt === "string") &&
    (header.chatTemplate === undefined || typeof header.chatTemplate === "string");
  if (!ok) throw fileError(path, "the file is corrupt (its header lacks fields or has wrong ones)");
}

const fingerprints = new Map<string, Promise<ModelFingerprint>>();

/**
 * The fingerprint of the model file at `path` (cached per path, size and modification time): its size, its GGUF
 * metadata and samples of its bytes, so that two files differing only in their weights differ too.
 */
export function modelFingerprint(path: string, metadata: Readonly<Record<string, string>>, description: string, digest?: string): Promise<ModelFingerprint> {
  const compute = async (): Promise<ModelFingerprint> => {
    const info = await stat(path);
    const key = `${path}\0${info.size}\0${info.mtimeMs}`;
    let cached = fingerprints.get(key);
    if (!cached) {
      cached = (async () => {
        const hash = createHash("sha256");
        hash.update(`size ${info.size}\n`);
        for (const name of Object.keys(metadata).sort()) hash.update(`${name}=${metadata[name] ?? ""}\n`);
        const file = await open(path, "r");
        try {
          const sample = Buffer.alloc(SAMPLE_BYTES);
          for (let i = 0; i < SAMPLE_COUNT; i++) {
            const offset = Math.floor(((info.size - SAMPLE_BYTES) * i) / (SAMPLE_COUNT - 1));
            const { bytesRead } = await file.read(sample, 0, SAMPLE_BYTES, Math.max(0, offset));
            hash.update(sample.subarray(0, bytesRead));
          }
        } finally {
          await file.close();
        }
        return { fingerprint: `sha256:${hash.digest("hex")}`, sizeBytes: info.size, description };
      })();
      fingerprints.set(key, cached);
      cached.catch(() => fingerprints.delete(key));
    }
    const found = await cached;
    return digest === undefined ? found : { ...found, digest };
  };
  return compute();
}
