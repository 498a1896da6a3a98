/**
 * model: what a model artifact is: media types, manifest and index parsing, platform selection, resolution to
 * the model manifest, the files llama.cpp uses and their layout, and the model config. No network.
 */
export * from "./media-types.js";
export * from "./manifest.js";
export * from "./platform.js";
export * from "./resolve.js";
export * from "./file-layout.js";
export * from "./config.js";
export * from "./defaults.js";
