import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Only our suites: deps/llama.cpp and bench/*/node_modules hold test files of their own.
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
