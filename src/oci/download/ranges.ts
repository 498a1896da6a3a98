/** A set of byte offsets kept as sorted, disjoint, merged half-open ranges [start, end): what of a blob is on disk. */
import type { ByteRange } from "../store/index.js";

export class RangeSet {
  private ranges: [number, number][] = [];
  private bytes = 0;

  constructor(initial: readonly ByteRange[] = []) {
    for (const [start, end] of initial) this.add(start, end);
  }

  /** Bytes in the set. */
  get total(): number {
    return this.bytes;
  }

  list(): readonly ByteRange[] {
    return this.ranges;
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    const ranges = this.ranges;
    // The first range that ends at or after `start` (touching ranges merge).
    let i = 0;
    while (i < ranges.length && ranges[i]![1] < start) i++;
    let j = i;
    let lo = start;
    let hi = end;
    let removed = 0;
    while (j < ranges.length && ranges[j]![0] <= end) {
      lo = Math.min(lo, ranges[j]![0]);
      hi = Math.max(hi, ranges[j]![1]);
      removed += ranges[j]![1] - ranges[j]![0];
      j++;
    }
    ranges.splice(i, j - i, [lo, hi]);
    this.bytes += hi - lo - removed;
  }

  /** Where the run of bytes from offset 0 ends (0 when byte 0 is missing). */
  prefix(): number {
    const first = this.ranges[0];
    return first && first[0] === 0 ? first[1] : 0;
  }

  /** The parts of [start, end) not in the set, in order. */
  missing(start: number, end: number): [number, number][] {
    const gaps: [number, number][] = [];
    let at = start;
    for (const [a, b] of this.ranges) {
      if (b <= at) continue;
      if (a >= end) break;
      if (a > at) gaps.push([at, Math.min(a, end)]);
      at = Math.max(at, b);
      if (at >= end) break;
    }
    if (at < end) gaps.push([at, end]);
    return gaps;
  }

  covers(start: number, end: number): boolean {
    return this.missing(start, end).length === 0;
  }
}
