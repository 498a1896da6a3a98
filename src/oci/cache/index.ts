/**
 * cache: the cache as users manage it: which models it lists, what a name stands for, what is still reachable,
 * and the operations on top: rm, prune and tag.
 */
export * from "./list.js";
export * from "./names.js";
export * from "./reachable.js";
export * from "./prune.js";
export * from "./remove.js";
export * from "./tag.js";
export * from "./mount-sources.js";
