/**
 * name: what a user types to name a model: image references, content digests and the registry host[:port]
 * grammar. Pure functions, no I/O; every other folder parses names through here.
 */
export * from "./host.js";
export * from "./digest.js";
export * from "./reference.js";
