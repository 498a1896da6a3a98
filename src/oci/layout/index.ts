/**
 * layout: OCI image layout directories (`oci:<dir>[:<tag>]`) as a source to pull from with no network and as a
 * target to save a cached model to, so a model can be carried to an air-gapped machine on a disk.
 */
export * from "./location.js";
export * from "./read.js";
export * from "./save.js";
