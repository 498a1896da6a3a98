/**
 * The GGUF file format (ggml/include/gguf.h): value types for metadata, ggml tensor types with their block layout,
 * and the shapes the reader returns and the writer accepts. All numbers in a GGUF file are little-endian.
 */

export const GGUF_MAGIC = "GGUF";
/** The version this package writes; the reader accepts 2 and 3, whose layouts are identical. */
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const GGUF_ALIGNMENT_KEY = "general.alignment";
/** ggml's GGML_MAX_NAME counts the terminating NUL, so names may hold at most 63 bytes. */
export const GGML_MAX_NAME_BYTES = 63;
export const GGML_MAX_DIMS = 4;

export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];
export type GgufScalarType = Exclude<GgufValueType, typeof GgufValueType.ARRAY>;

/** Bytes one value of a fixed-size type takes; strings and arrays are variable. */
export const GGUF_VALUE_SIZE: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

const VALUE_TYPE_NAMES = new Map<number, string>(Object.entries(GgufValueType).map(([name, id]) => [id, name.toLowerCase()]));

export function ggufValueTypeName(type: number): string {
  return VALUE_TYPE_NAMES.get(type) ?? `unknown(${type})`;
}

export function isGgufValueType(type: number): type is GgufValueType {
  return VALUE_TYPE_NAMES.has(type);
}

/**
 * A scalar as JavaScript holds it: integers and floats as number, except 64-bit integers outside
 * Number.MAX_SAFE_INTEGER, which the reader returns as bigint (the writer takes either).
 */
export type GgufScalar = number | bigint | boolean | string;

/**
 * An array value. `length` is the element count stored in the file; the reader may keep fewer `items` than that
 * (see maxArrayLength), so `items.length < length` means the array was truncated while reading.
 */
export interface GgufArray {
  itemType: GgufValueType;
  length: number;
  items: (GgufScalar | GgufArray)[];
}

/** One metadata value together with the type it has (or will have) in the file. */
export type GgufEntry =
  | { type: GgufScalarType; value: GgufScalar }
  | { type: typeof GgufValueType.ARRAY; value: GgufArray };

export function isTruncatedArray(value: GgufArray): boolean {
  return value.items.length < value.length;
}

/** ggml_type ids as stored in tensor infos (ggml/include/ggml.h). Gaps are types removed from ggml. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

const QK_K = 256;

/** Elements per block and bytes per block of each type (gguf-py GGML_QUANT_SIZES). */
const GGML_BLOCK_LAYOUT: Record<GgmlType, readonly [blockSize: number, typeSize: number]> = {
  [GgmlType.F32]: [1, 4],
  [GgmlType.F16]: [1, 2],
  [GgmlType.Q4_0]: [32, 2 + 16],
  [GgmlType.Q4_1]: [32, 2 + 2 + 16],
  [GgmlType.Q5_0]: [32, 2 + 4 + 16],
  [GgmlType.Q5_1]: [32, 2 + 2 + 4 + 16],
  [GgmlType.Q8_0]: [32, 2 + 32],
  [GgmlType.Q8_1]: [32, 4 + 4 + 32],
  [GgmlType.Q2_K]: [QK_K, 2 + 2 + QK_K / 16 + QK_K / 4],
  [GgmlType.Q3_K]: [QK_K, 2 + QK_K / 4 + QK_K / 8 + 12],
  [GgmlType.Q4_K]: [QK_K, 2 + 2 + QK_K / 2 + 12],
  [GgmlType.Q5_K]: [QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12],
  [GgmlType.Q6_K]: [QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16],
  [GgmlType.Q8_K]: [QK_K, 4 + QK_K + QK_K / 8],
  [GgmlType.IQ2_XXS]: [QK_K, 2 + QK_K / 4],
  [GgmlType.IQ2_XS]: [QK_K, 2 + QK_K / 4 + QK_K / 32],
  [GgmlType.IQ3_XXS]: [QK_K, 2 + QK_K / 4 + QK_K / 8],
  [GgmlType.IQ1_S]: [QK_K, 2 + QK_K / 8 + QK_K / 16],
  [GgmlType.IQ4_NL]: [32, 2 + 16],
  [GgmlType.IQ3_S]: [QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4],
  [GgmlType.IQ2_S]: [QK_K, 2 + QK_K / 4 + QK_K / 16],
  [GgmlType.IQ4_XS]: [QK_K, 2 + 2 + QK_K / 2 + QK_K / 64],
  [GgmlType.I8]: [1, 1],
  [GgmlType.I16]: [1, 2],
  [GgmlType.I32]: [1, 4],
  [GgmlType.I64]: [1, 8],
  [GgmlType.F64]: [1, 8],
  [GgmlType.IQ1_M]: [QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32],
  [GgmlType.BF16]: [1, 2],
  [GgmlType.TQ1_0]: [QK_K, 2 + 4 * 13],
  [GgmlType.TQ2_0]: [QK_K, 2 + 64],
  [GgmlType.MXFP4]: [32, 1 + 16],
  [GgmlType.NVFP4]: [64, 4 + 32],
  [GgmlType.Q1_0]: [128, 2 + 16],
  [GgmlType.Q2_0]: [64, 2 + 16],
};

const GGML_TYPE_NAMES = new Map<number, string>(Object.entries(GgmlType).map(([name, id]) => [id, name]));

export function isGgmlType(type: number): type is GgmlType {
  return GGML_TYPE_NAMES.has(type);
}

/** "Q4_K", "F16", ...; "unknown(N)" for ids this package does not know. */
export function ggmlTypeName(type: number): string {
  return GGML_TYPE_NAMES.get(type) ?? `unknown(${type})`;
}

export function ggmlBlockLayout(type: number): { blockSize: number; typeSize: number } | undefined {
  if (!isGgmlType(type)) return undefined;
  const [blockSize, typeSize] = GGML_BLOCK_LAYOUT[type];
  return { blockSize, typeSize };
}

/**
 * Bytes a tensor of this shape and type occupies in the data section (ggml_nbytes for a contiguous tensor), or
 * undefined when the type is unknown or the first dimension is not a whole number of blocks.
 */
export function ggmlTensorBytes(shape: readonly number[], type: number): number | undefined {
  const layout = ggmlBlockLayout(type);
  if (layout === undefined) return undefined;
  const elements = shape.reduce((product, dim) => product * dim, 1);
  if ((shape[0] ?? 1) % layout.blockSize !== 0) return undefined;
  return (elements / layout.blockSize) * layout.typeSize;
}

/** Where a tensor lies: `offset` is relative to the start of the data section (GgufHeader.dataOffset). */
export interface GgufTensorInfo {
  name: string;
  /** ggml order: shape[0] is the innermost (contiguous) dimension, as ggml's ne[]. */
  shape: number[];
  type: number;
  offset: number;
  /** Bytes of data, when the type is known (see ggmlTensorBytes). */
  size?: number;
}

export interface GgufHeader {
  version: number;
  tensorCount: number;
  /** Every key-value pair, in file order. */
  metadata: Map<string, GgufEntry>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute file offset of the data section: the end of the tensor infos, padded to `alignment` when there are tensors. */
  dataOffset: number;
}

export function padTo(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}
