import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { LlamaOciError } from "../errors.js";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME_BYTES,
  GGUF_ALIGNMENT_KEY,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgufValueType,
  ggmlBlockLayout,
  ggmlTensorBytes,
  ggmlTypeName,
  ggufValueTypeName,
  isGgufValueType,
  padTo,
  type GgufScalar,
} from "./types.js";

/** An array to write. A GgufArray from the reader fits, unless it was truncated (length > items.length). */
export interface GgufArrayInput {
  itemType: GgufValueType;
  items: readonly (GgufScalar | GgufArrayInput)[];
  length?: number;
}

interface PendingTensor {
  name: string;
  shape: number[];
  type: number;
  data: Uint8Array;
}

/**
 * Builds a GGUF version 3 file: metadata in the order added, then tensor infos, then each tensor's data padded to
 * the alignment (general.alignment when added, else 32), which is the layout ggml's gguf.cpp reads and writes.
 */
export class GgufWriter {
  private readonly entries = new Map<string, Buffer>();
  private readonly tensors: PendingTensor[] = [];
  private customAlignment: number | undefined;

  get alignment(): number {
    return this.customAlignment ?? GGUF_DEFAULT_ALIGNMENT;
  }

  /**
   * Adds one key. Integers may be numbers or bigints within the type's range; arrays take
   * `{ itemType, items }`. A key may be added once.
   */
  addMetadata(key: string, type: GgufValueType, value: GgufScalar | GgufArrayInput): this {
    if (typeof key !== "string" || key === "") throw argument("a GGUF metadata key must be a non-empty string");
    if (this.entries.has(key)) throw argument(`GGUF metadata key "${key}" was already added`);
    if (key === GGUF_ALIGNMENT_KEY) {
      if (type !== GgufValueType.UINT32 || typeof value !== "number" || !(value > 0) || (value & (value - 1)) !== 0) {
        throw argument(`"${GGUF_ALIGNMENT_KEY}" must be a uint32 power of two`);
      }
      if (this.tensors.length > 0) throw argument(`add "${GGUF_ALIGNMENT_KEY}" before any tensor`);
      this.customAlignment = value;
    }
    const sink = new ByteSink(64);
    sink.string(key);
    sink.u32(type);
    encodeValue(sink, key, type, value);
    this.entries.set(key, Buffer.from(sink.bytes()));
    return this;
  }

  addArray(key: string, itemType: GgufValueType, items: readonly (GgufScalar | GgufArrayInput)[]): this {
    return this.addMetadata(key, GgufValueType.ARRAY, { itemType, items });
  }

  /**
   * Adds a tensor. `shape` is in ggml order (shape[0] is the contiguous dimension, ggml's ne[0]), and `data` holds
   * exactly the tensor's bytes in little-endian order; a Float32Array or Uint16Array view is taken as is.
   */
  addTensor(name: string, shape: readonly number[], type: number, data: ArrayBufferView): this {
    const nameBytes = typeof name === "string" ? Buffer.byteLength(name, "utf8") : 0;
    if (nameBytes === 0 || nameBytes > GGML_MAX_NAME_BYTES) {
      throw argument(`tensor name ${JSON.stringify(name)} must hold 1 to ${GGML_MAX_NAME_BYTES} bytes`);
    }
    if (this.tensors.some((tensor) => tensor.name === name)) throw argument(`tensor "${name}" was already added`);
    if (shape.length < 1 || shape.length > GGML_MAX_DIMS || !shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
      throw argument(`tensor "${name}" needs 1 to ${GGML_MAX_DIMS} non-negative integer dimensions, got [${shape.join(", ")}]`);
    }
    const layout = ggmlBlockLayout(type);
    if (layout === undefined) throw argument(`tensor "${name}" has an unknown ggml type ${type}`);
    if (shape[0]! % layout.blockSize !== 0) {
      throw argument(`tensor "${name}" of type ${ggmlTypeName(type)} needs a first dimension that is a multiple of ${layout.blockSize}`);
    }
    const expected = ggmlTensorBytes(shape, type)!;
    if (data.byteLength !== expected) {
      throw argument(`tensor "${name}" [${shape.join(", ")}] of type ${ggmlTypeName(type)} needs ${expected} bytes of data, got ${data.byteLength}`);
    }
    this.tensors.push({ name, shape: [...shape], type, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    return this;
  }

  /** The whole file in memory. */
  toBuffer(): Buffer {
    return Buffer.concat([...this.chunks()]);
  }

  /** Writes the file chunk by chunk, without building it in memory, to a temporary name renamed into place at the end. */
  async write(path: string): Promise<void> {
    const temporary = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.partial`;
    const handle = await open(temporary, "w");
    try {
      for (const chunk of this.chunks()) {
        for (let written = 0; written < chunk.byteLength; ) {
          const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written);
          written += bytesWritten;
        }
      }
      await handle.close();
      await rename(temporary, path);
    } catch (error) {
      await handle.close().catch(() => {});
      await rm(temporary, { force: true });
      throw error;
    }
  }

  private *chunks(): Generator<Uint8Array> {
    const alignment = this.alignment;
    const header = new ByteSink(1024);
    header.bytesOf(GGUF_MAGIC);
    header.u32(GGUF_VERSION);
    header.i64(this.tensors.length);
    header.i64(this.entries.size);
    const head = header.bytes();
    yield head;
    yield* this.entries.values();

    const infos = new ByteSink(256 + this.tensors.length * 64);
    let offset = 0;
    for (const tensor of this.tensors) {
      infos.string(tensor.name);
      infos.u32(tensor.shape.length);
      for (const dim of tensor.shape) infos.i64(dim);
      infos.i32(tensor.type);
      infos.u64(offset);
      offset += padTo(tensor.data.byteLength, alignment);
    }
    if (this.tensors.length > 0) {
      let headerSize = head.length + infos.size;
      for (const entry of this.entries.values()) headerSize += entry.length;
      infos.zeros(padTo(headerSize, alignment) - headerSize);
    }
    yield infos.bytes();

    for (const tensor of this.tensors) {
      yield tensor.data;
      const padding = padTo(tensor.data.byteLength, alignment) - tensor.data.byteLength;
      if (padding > 0) yield Buffer.alloc(padding);
    }
  }
}

const INTEGER_RANGES: Partial<Record<GgufValueType, readonly [bigint, bigint]>> = {
  [GgufValueType.UINT8]: [0n, 0xffn],
  [GgufValueType.INT8]: [-0x80n, 0x7fn],
  [GgufValueType.UINT16]: [0n, 0xffffn],
  [GgufValueType.INT16]: [-0x8000n, 0x7fffn],
  [GgufValueType.UINT32]: [0n, 0xffffffffn],
  [GgufValueType.INT32]: [-0x80000000n, 0x7fffffffn],
  [GgufValueType.UINT64]: [0n, 0xffffffffffffffffn],
  [GgufValueType.INT64]: [-0x8000000000000000n, 0x7fffffffffffffffn],
};

function encodeValue(sink: ByteSink, key: string, type: number, value: unknown): void {
  if (!isGgufValueType(type)) throw argument(`GGUF metadata key "${key}" has an unknown value type ${type}`);
  const wrong = (): LlamaOciError =>
    argument(`GGUF metadata key "${key}": ${describe(value)} is not a valid ${ggufValueTypeName(type)} value`);
  const range = INTEGER_RANGES[type];
  if (range !== undefined) {
    if (typeof value === "number") {
      if (!Number.isSafeInteger(value) || value < range[0] || value > range[1]) throw wrong();
    } else if (typeof value !== "bigint" || value < range[0] || value > range[1]) {
      throw wrong();
    }
    switch (type) {
      case GgufValueType.UINT8: return sink.u8(Number(value));
      case GgufValueType.INT8: return sink.i8(Number(value));
      case GgufValueType.UINT16: return sink.u16(Number(value));
      case GgufValueType.INT16: return sink.i16(Number(value));
      case GgufValueType.UINT32: return sink.u32(Number(value));
      case GgufValueType.INT32: return sink.i32(Number(value));
      case GgufValueType.UINT64: return sink.u64(value);
      default: return sink.i64(value);
    }
  }
  switch (type) {
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64:
      if (typeof value !== "number") throw wrong();
      return type === GgufValueType.FLOAT32 ? sink.f32(value) : sink.f64(value);
    case GgufValueType.BOOL:
      if (typeof value !== "boolean") throw wrong();
      return sink.i8(value ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof value !== "string") throw wrong();
      return sink.string(value);
    default: {
      const array = value as GgufArrayInput;
      if (typeof array !== "object" || array === null || !Array.isArray(array.items)) throw wrong();
      if (array.length !== undefined && array.length !== array.items.length) {
        throw argument(`GGUF metadata key "${key}" holds ${array.items.length} of ${array.length} items (read with maxArrayLength); read it whole to write it`);
      }
      if (!isGgufValueType(array.itemType)) throw argument(`GGUF metadata key "${key}" has an unknown item type ${array.itemType as number}`);
      if (array.itemType === GgufValueType.ARRAY) throw argument(`GGUF metadata key "${key}" is an array of arrays, which ggml cannot read`);
      sink.u32(array.itemType);
      sink.u64(array.items.length);
      for (const item of array.items) encodeValue(sink, key, array.itemType, item);
    }
  }
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "object" && value !== null) return Array.isArray(value) ? "an array" : "an object";
  return String(value);
}

function argument(message: string): LlamaOciError {
  return new LlamaOciError("INVALID_ARGUMENT", message);
}

/** A growable little-endian byte buffer for encoding headers. */
class ByteSink {
  private buffer: Buffer;
  private length = 0;

  constructor(initialSize: number) {
    this.buffer = Buffer.alloc(initialSize);
  }

  get size(): number {
    return this.length;
  }

  /** The bytes written so far: a view, valid until the next write. */
  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }

  private reserve(bytes: number): number {
    const at = this.length;
    if (at + bytes > this.buffer.length) {
      const next = Buffer.alloc(Math.max(this.buffer.length * 2, at + bytes));
      this.buffer.copy(next, 0, 0, at);
      this.buffer = next;
    }
    this.length = at + bytes;
    return at;
  }

  bytesOf(latin1: string): void {
    const at = this.reserve(latin1.length);
    this.buffer.write(latin1, at, "latin1");
  }
  u8(value: number): void {
    const at = this.reserve(1);
    this.buffer.writeUInt8(value, at);
  }
  i8(value: number): void {
    const at = this.reserve(1);
    this.buffer.writeInt8(value, at);
  }
  u16(value: number): void {
    const at = this.reserve(2);
    this.buffer.writeUInt16LE(value, at);
  }
  i16(value: number): void {
    const at = this.reserve(2);
    this.buffer.writeInt16LE(value, at);
  }
  u32(value: number): void {
    const at = this.reserve(4);
    this.buffer.writeUInt32LE(value, at);
  }
  i32(value: number): void {
    const at = this.reserve(4);
    this.buffer.writeInt32LE(value, at);
  }
  u64(value: number | bigint): void {
    const at = this.reserve(8);
    this.buffer.writeBigUInt64LE(BigInt(value), at);
  }
  i64(value: number | bigint): void {
    const at = this.reserve(8);
    this.buffer.writeBigInt64LE(BigInt(value), at);
  }
  f32(value: number): void {
    const at = this.reserve(4);
    this.buffer.writeFloatLE(value, at);
  }
  f64(value: number): void {
    const at = this.reserve(8);
    this.buffer.writeDoubleLE(value, at);
  }
  /** A GGUF string: the UTF-8 byte count as uint64, then the bytes, no terminator. */
  string(value: string): void {
    const bytes = Buffer.byteLength(value, "utf8");
    this.u64(bytes);
    const at = this.reserve(bytes);
    this.buffer.write(value, at, bytes, "utf8");
  }
  zeros(count: number): void {
    const at = this.reserve(count);
    this.buffer.fill(0, at, at + count);
  }
}
