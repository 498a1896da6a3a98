// The pieces of a parallel download that need no server: the set of byte ranges on disk (merging, gaps, the
// contiguous prefix the hasher may read) and the per-part state file's format (what is trusted, what is refused).
import { expect, test } from "vitest";
import { RangeSet } from "../src/oci/download/index.js";
import { parsePartialState, serializePartialState } from "../src/oci/store/index.js";

const DIGEST = `sha256:${"ab".repeat(32)}`;

test("ranges merge when they touch or overlap; total, prefix and gaps follow", () => {
  const set = new RangeSet();
  set.add(10, 20);
  set.add(30, 40);
  expect(set.list()).toEqual([
    [10, 20],
    [30, 40],
  ]);
  expect(set.prefix()).toBe(0);
  set.add(0, 10);
  expect(set.prefix()).toBe(20);
  set.add(15, 35);
  expect(set.list()).toEqual([[0, 40]]);
  expect(set.total).toBe(40);
  set.add(50, 60);
  set.add(55, 58);
  expect(set.total).toBe(50);
  expect(set.missing(0, 70)).toEqual([
    [40, 50],
    [60, 70],
  ]);
  expect(set.missing(52, 57)).toEqual([]);
  expect(set.covers(0, 40)).toBe(true);
  expect(set.covers(39, 41)).toBe(false);
});

test("the state file round-trips, padded or not", () => {
  const done = [
    [0, 100],
    [200, 300],
  ] as const;
  const text = serializePartialState({ digest: DIGEST, size: 1000, done });
  expect(parsePartialState(text, DIGEST, 1000)).toEqual(done);
  expect(parsePartialState(`${text}      `, DIGEST, 1000)).toEqual(done);
});

test("a state for another digest or size, or with ranges out of order, overlapping, empty or past the end, is refused", () => {
  const state = (done: unknown, extra: Record<string, unknown> = {}) => JSON.stringify({ version: 1, digest: DIGEST, size: 1000, done, ...extra });
  expect(parsePartialState(state([[0, 10]]), DIGEST, 1001)).toBeUndefined();
  expect(parsePartialState(state([[0, 10]]), `sha256:${"cd".repeat(32)}`, 1000)).toBeUndefined();
  expect(parsePartialState(state([[0, 10]], { version: 2 }), DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState(state([[20, 30], [0, 10]]), DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState(state([[0, 30], [20, 40]]), DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState(state([[5, 5]]), DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState(state([[900, 1001]]), DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState(state([[0.5, 10]]), DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState('{"version":1,"digest":', DIGEST, 1000)).toBeUndefined();
  expect(parsePartialState(state([]), DIGEST, 1000)).toEqual([]);
});
