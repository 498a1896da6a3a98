// The generator lives in src/testing so that scripts running from dist/ (npm run demo, bench, pack test) share it.
export * from "../../src/testing/tiny-llama.js";
