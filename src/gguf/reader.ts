import { open } from "node:fs/promises";
import { LlamaOciError } from "../errors.js";
import {
  GGML_MAX_DIMS,
  GGUF_ALIGNMENT_KEY,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VALUE_SIZE,
  GGUF_VERSION,
  GgufValueType,
  ggmlTensorBytes,
  ggufValueTypeName,
  isGgufValueType,
  padTo,
  type GgufArray,
  type GgufEntry,
  type GgufHeader,
  type GgufScalar,
  type GgufTensorInfo,
} from "./types.js";

export interface GgufReadOptions {
  /**
   * Keep at most this many items of each array (the tokenizer's vocabulary and merges can hold hundreds of
   * thousands); the rest is skipped, and GgufArray.length still tells the full count. Default: keep everything.
   */
  maxArrayLength?: number;
}

export interface GgufFileHeader extends GgufHeader {
  /** Bytes read from the file to parse the header: the header itself and part of one read beyond it (at most 1 MiB). */
  bytesRead: number;
  fileSize: number;
}

/** The same limits as ggml's gguf.cpp, so that a file it would refuse is refused here too, before allocating. */
const MAX_STRING_BYTES = 1024 * 1024 * 1024;
const MAX_ARRAY_ITEMS = 1024 * 1024 * 1024;
const READ_CHUNK = 64 * 1024;
const MAX_READ_CHUNK = 1024 * 1024;
/** Fixed-size array items are made available this many bytes at a time, so huge arrays need no huge buffer. */
const ARRAY_WINDOW = 1024 * 1024;

/** Parses the header of a complete GGUF file, or of any prefix of one that holds the whole header. */
export function parseGgufHeader(buffer: Buffer, options: GgufReadOptions & { source?: string } = {}): GgufHeader {
  const source = options.source ?? "the buffer";
  const cursor = new Cursor(buffer, buffer.length);
  const parser = parseHeader(cursor, source, options);
  for (let step = parser.next(); ; step = parser.next()) {
    if (step.done) return step.value;
    throw truncated(source, cursor);
  }
}

/**
 * Reads the header of the GGUF file at `path` with incremental reads, stopping where the tensor data begins; large
 * arrays left out by maxArrayLength are stepped over without being kept (fixed-size ones without being read).
 */
export async function readGgufHeader(path: string, options: GgufReadOptions = {}): Promise<GgufFileHeader> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw fileError(path, error);
  }
  try {
    const fileSize = (await handle.stat()).size;
    const cursor = new Cursor(Buffer.alloc(0), fileSize);
    let bytesRead = 0;
    const parser = parseHeader(cursor, path, options);
    for (let step = parser.next(); ; step = parser.next()) {
      if (step.done) return { ...step.value, bytesRead, fileSize };
      const request = step.value;
      if ("skip" in request) {
        const target = cursor.offset + request.skip;
        if (target > fileSize) throw truncated(path, cursor);
        cursor.reset(Buffer.alloc(0), target);
        continue;
      }
      const kept = cursor.buffer.subarray(cursor.position);
      // Reads grow with the header read so far, so a long header takes few reads while a short one reads little past it.
      const wanted = Math.max(request.need - kept.length, Math.min(MAX_READ_CHUNK, Math.max(READ_CHUNK, bytesRead)));
      const start = cursor.offset + kept.length;
      const length = Math.min(wanted, fileSize - start);
      const next = Buffer.allocUnsafe(kept.length + Math.max(length, 0));
      kept.copy(next);
      let filled = kept.length;
      while (filled < next.length) {
        const { bytesRead: n } = await handle.read(next, filled, next.length - filled, cursor.offset + filled);
        if (n === 0) break;
        filled += n;
      }
      bytesRead += filled - kept.length;
      cursor.reset(next.subarray(0, filled), cursor.offset);
      if (filled < request.need) throw truncated(path, cursor, cursor.offset + filled);
    }
  } finally {
    await handle.close();
  }
}

type ReadRequest = { need: number } | { skip: number };
type Reading<T> = Generator<ReadRequest, T, void>;

/**
 * A window on the file: `buffer` holds the bytes from absolute offset `start`. The parser asks for bytes by
 * yielding a request; whoever drives it either makes them available or throws.
 */
class Cursor {
  buffer: Buffer;
  position = 0;
  private start = 0;
  /** What the parser is reading, for error messages. */
  context = "the magic number";

  constructor(buffer: Buffer, readonly totalSize: number) {
    this.buffer = buffer;
  }

  get offset(): number {
    return this.start + this.position;
  }

  reset(buffer: Buffer, offset: number): void {
    this.buffer = buffer;
    this.start = offset;
    this.position = 0;
  }

  *need(bytes: number): Reading<void> {
    if (this.buffer.length - this.position < bytes) yield { need: bytes };
  }

  *skip(bytes: number): Reading<void> {
    const here = Math.min(bytes, this.buffer.length - this.position);
    this.position += here;
    if (bytes > here) yield { skip: bytes - here };
  }

  /** Fails early when `bytes` more cannot fit in the file, instead of looping over a count read from garbage. */
  mustFit(bytes: number): void {
    if (this.offset + bytes > this.totalSize) throw new TruncatedError();
  }

  u8(): number {
    return this.buffer[this.position++]!;
  }
  u32(): number {
    const value = this.buffer.readUInt32LE(this.position);
    this.position += 4;
    return value;
  }
  i32(): number {
    const value = this.buffer.readInt32LE(this.position);
    this.position += 4;
    return value;
  }
  u64(): bigint {
    const value = this.buffer.readBigUInt64LE(this.position);
    this.position += 8;
    return value;
  }
  i64(): bigint {
    const value = this.buffer.readBigInt64LE(this.position);
    this.position += 8;
    return value;
  }
  /** The next string when it lies wholly in the buffer (the common case, read without generator overhead). */
  bufferedString(): string | undefined {
    const p = this.position;
    if (this.buffer.length - p < 8 || this.buffer.readUInt32LE(p + 4) !== 0) return undefined;
    const length = this.buffer.readUInt32LE(p);
    if (this.buffer.length - p - 8 < length) return undefined;
    this.position = p + 8 + length;
    return this.buffer.toString("utf8", p + 8, p + 8 + length);
  }

  utf8(bytes: number): string {
    const value = this.buffer.toString("utf8", this.position, this.position + bytes);
    this.position += bytes;
    return value;
  }
}

class TruncatedError extends Error {}

function* parseHeader(c: Cursor, source: string, options: GgufReadOptions): Reading<GgufHeader> {
  const maxItems = options.maxArrayLength ?? Number.POSITIVE_INFINITY;
  try {
    yield* c.need(Math.min(4, c.totalSize));
    const magic = c.buffer.subarray(c.position, c.position + 4);
    if (magic.length === 0 || !GGUF_MAGIC.startsWith(magic.toString("latin1"))) throw notGguf(source, magic);
    if (magic.length < 4) throw new TruncatedError();
    c.position += 4;

    c.context = "the version";
    yield* c.need(4);
    const version = c.u32();
    checkVersion(source, version);
    c.context = "the tensor count";
    yield* c.need(8);
    const tensorCount = count(source, c.i64(), "tensor count");
    c.context = "the metadata count";
    yield* c.need(8);
    const kvCount = count(source, c.i64(), "metadata count");
    c.context = `the metadata (${kvCount} keys) and tensor infos (${tensorCount})`;
    // Each key-value pair takes at least 13 bytes, each tensor info at least 24.
    c.mustFit(kvCount * 13 + tensorCount * 24);

    const metadata = new Map<string, GgufEntry>();
    for (let i = 0; i < kvCount; i++) {
      c.context = `metadata key ${i}`;
      const key = yield* readString(c, source);
      if (key === "") throw invalid(source, `metadata key ${i} is empty`);
      if (metadata.has(key)) throw invalid(source, `metadata key "${key}" appears twice`);
      c.context = `the value of "${key}"`;
      yield* c.need(4);
      const type = c.u32();
      if (type === GgufValueType.ARRAY) {
        metadata.set(key, { type, value: yield* readArray(c, source, key, maxItems) });
      } else if (isGgufValueType(type)) {
        metadata.set(key, { type, value: yield* readScalar(c, source, type) } as GgufEntry);
      } else {
        throw invalid(source, `metadata key "${key}" has an unknown value type ${type}`);
      }
    }

    const alignment = alignmentOf(source, metadata);
    const tensors: GgufTensorInfo[] = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      c.context = `tensor info ${i}`;
      const name = yield* readString(c, source);
      if (names.has(name)) throw invalid(source, `tensor "${name}" appears twice`);
      names.add(name);
      c.context = `the info of tensor "${name}"`;
      yield* c.need(4);
      const dims = c.u32();
      if (dims > GGML_MAX_DIMS) throw invalid(source, `tensor "${name}" has ${dims} dimensions; ggml allows at most ${GGML_MAX_DIMS}`);
      yield* c.need(dims * 8 + 4 + 8);
      const shape: number[] = [];
      for (let d = 0; d < dims; d++) {
        const dim = c.i64();
        if (dim < 0n || dim > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(source, `tensor "${name}" has an invalid dimension ${dim}`);
        shape.push(Number(dim));
      }
      const type = c.i32();
      const offset = c.u64();
      if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(source, `tensor "${name}" has an invalid data offset ${offset}`);
      const size = ggmlTensorBytes(shape, type);
      tensors.push({ name, shape, type, offset: Number(offset), ...(size === undefined ? {} : { size }) });
    }

    const end = c.offset;
    return { version, tensorCount, metadata, tensors, alignment, dataOffset: tensorCount > 0 ? padTo(end, alignment) : end };
  } catch (error) {
    if (error instanceof TruncatedError) throw truncated(source, c);
    throw error;
  }
}

function* readString(c: Cursor, source: string): Reading<string> {
  yield* c.need(8);
  const length = stringLength(c, source);
  yield* c.need(length);
  return c.utf8(length);
}

function stringLength(c: Cursor, source: string): number {
  const length = c.u64();
  if (length > BigInt(MAX_STRING_BYTES)) throw invalid(source, `${c.context} is a string of ${length} bytes, more than ggml allows`);
  const bytes = Number(length);
  c.mustFit(bytes);
  return bytes;
}

function* readScalar(c: Cursor, source: string, type: GgufValueType): Reading<GgufScalar> {
  if (type === GgufValueType.STRING) return yield* readString(c, source);
  yield* c.need(GGUF_VALUE_SIZE[type]!);
  return scalarAt(c, type);
}

/** Reads one fixed-size value; the caller has made its bytes available. */
function scalarAt(c: Cursor, type: GgufValueType): GgufScalar {
  const b = c.buffer;
  const p = c.position;
  switch (type) {
    case GgufValueType.UINT8:
      c.position += 1;
      return b.readUInt8(p);
    case GgufValueType.INT8:
      c.position += 1;
      return b.readInt8(p);
    case GgufValueType.UINT16:
      c.position += 2;
      return b.readUInt16LE(p);
    case GgufValueType.INT16:
      c.position += 2;
      return b.readInt16LE(p);
    case GgufValueType.UINT32:
      c.position += 4;
      return b.readUInt32LE(p);
    case GgufValueType.INT32:
      c.position += 4;
      return b.readInt32LE(p);
    case GgufValueType.FLOAT32:
      c.position += 4;
      return b.readFloatLE(p);
    case GgufValueType.BOOL:
      c.position += 1;
      return b.readInt8(p) !== 0;
    case GgufValueType.UINT64:
      return narrow(c.u64());
    case GgufValueType.INT64:
      return narrow(c.i64());
    case GgufValueType.FLOAT64:
      c.position += 8;
      return b.readDoubleLE(p);
    default:
      throw new Error(`not a fixed-size GGUF type: ${type}`);
  }
}

function narrow(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

function* readArray(c: Cursor, source: string, key: string, maxItems: number): Reading<GgufArray> {
  yield* c.need(4 + 8);
  const itemType = c.u32();
  if (!isGgufValueType(itemType)) throw invalid(source, `metadata key "${key}" is an array of unknown type ${itemType}`);
  const rawLength = c.u64();
  if (rawLength > BigInt(MAX_ARRAY_ITEMS)) throw invalid(source, `metadata key "${key}" has ${rawLength} items, more than ggml allows`);
  const length = Number(rawLength);
  const itemSize = GGUF_VALUE_SIZE[itemType];
  // Strings take at least 8 bytes (their length), arrays at least 12.
  c.mustFit(length * (itemSize ?? (itemType === GgufValueType.STRING ? 8 : 12)));
  const kept = Math.min(length, maxItems);
  const items = new Array<GgufScalar | GgufArray>(kept);

  if (itemSize !== undefined) {
    const window = Math.max(1, Math.floor(ARRAY_WINDOW / itemSize));
    for (let i = 0; i < kept; ) {
      const batch = Math.min(window, kept - i);
      yield* c.need(batch * itemSize);
      for (const stop = i + batch; i < stop; i++) items[i] = scalarAt(c, itemType);
    }
    yield* c.skip((length - kept) * itemSize);
  } else if (itemType === GgufValueType.STRING) {
    for (let i = 0; i < kept; i++) items[i] = c.bufferedString() ?? (yield* readString(c, source));
    for (let i = kept; i < length; i++) {
      yield* c.need(8);
      yield* c.skip(stringLength(c, source));
    }
  } else {
    for (let i = 0; i < kept; i++) items[i] = yield* readArray(c, source, key, maxItems);
    for (let i = kept; i < length; i++) yield* readArray(c, source, key, 0);
  }
  return { itemType, length, items };
}

function checkVersion(source: string, version: number): void {
  if (version === 0 || (version & 0xffff) === 0) {
    throw invalid(source, `has GGUF version ${version >>> 0}; a big-endian GGUF file is not supported`);
  }
  if (version === 1) throw invalid(source, "is a GGUF version 1 file, which llama.cpp no longer loads", "convert it again with a current llama.cpp");
  if (version > GGUF_VERSION) {
    throw invalid(source, `is GGUF version ${version}; this version of llama-oci reads versions 2 and 3`, "upgrade llama-oci");
  }
}

function count(source: string, value: bigint, what: string): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(source, `has an invalid ${what} ${value}`);
  return Number(value);
}

function alignmentOf(source: string, metadata: Map<string, GgufEntry>): number {
  const entry = metadata.get(GGUF_ALIGNMENT_KEY);
  if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (entry.type !== GgufValueType.UINT32) {
    throw invalid(source, `"${GGUF_ALIGNMENT_KEY}" must be a uint32, not ${ggufValueTypeName(entry.type)}`);
  }
  const value = entry.value as number;
  if (value === 0 || (value & (value - 1)) !== 0) throw invalid(source, `"${GGUF_ALIGNMENT_KEY}" is ${value}, not a power of two`);
  return value;
}

function notGguf(source: string, magic: Buffer): LlamaOciError {
  if (magic.length === 0) return new LlamaOciError("UNSUPPORTED_ARTIFACT", `${source} is not a GGUF file: it is empty`);
  const shown = [...magic].map((byte) => (byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : "?")).join("");
  return new LlamaOciError("UNSUPPORTED_ARTIFACT", `${source} is not a GGUF file: it starts with "${shown}" instead of "GGUF"`, {
    hint: "llama-oci runs GGUF models only; convert the model with llama.cpp's convert_hf_to_gguf.py",
  });
}

function truncated(source: string, c: Cursor, end = c.totalSize): LlamaOciError {
  return new LlamaOciError("UNSUPPORTED_ARTIFACT", `truncated GGUF header in ${source}: it ends at byte ${end}, in ${c.context}`, {
    hint: "the file is incomplete or damaged; download it again",
  });
}

function invalid(source: string, problem: string, hint?: string): LlamaOciError {
  const message = /^(is|has) /.test(problem) ? `${source} ${problem}` : `invalid GGUF header in ${source}: ${problem}`;
  return new LlamaOciError("UNSUPPORTED_ARTIFACT", message, hint === undefined ? {} : { hint });
}

function fileError(path: string, error: unknown): LlamaOciError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new LlamaOciError("NOT_FOUND", `${path} does not exist`, { cause: error });
  return new LlamaOciError("INVALID_ARGUMENT", `cannot read ${path}: ${(error as Error).message}`, { cause: error });
}
