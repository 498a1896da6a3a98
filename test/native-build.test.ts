// The native build's configuration step: a backend whose toolkit is incomplete, or one that does not exist, stops
// the build at once with a message that says what is missing (this machine has nvcc but no cuBLAS, and no Vulkan
// SDK), and an unchanged build is skipped.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ROOT_DIR } from "./helpers/cli.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let workDir: string;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-native-build");
});

afterAll(async () => {
  await removeDir(workDir);
});

function configure(gpu: string) {
  const result = spawnSync(
    "cmake",
    ["-S", ROOT_DIR, "-B", join(workDir, gpu), `-DLLAMA_OCI_GPU=${gpu}`, `-DLLAMA_CPP_DIR=${join(ROOT_DIR, "deps", "llama.cpp")}`],
    { encoding: "utf8", timeout: 120_000 },
  );
  return { status: result.status, output: `${result.stdout}\n${result.stderr}`.replace(/\s+/g, " ") };
}

describe("backend selection", () => {
  test("an unknown backend is refused by name", () => {
    const { status, output } = configure("bogus");
    expect(status).not.toBe(0);
    expect(output).toContain("LLAMA_OCI_GPU=bogus is not a backend this build knows: use cpu, cuda, vulkan or metal.");
  });

  test("CUDA without a complete toolkit fails with what is missing, not a compiler or linker error", () => {
    const { status, output } = configure("cuda");
    if (status === 0) {
      // A machine with nvcc and cuBLAS: the CUDA backend is configured.
      expect(output).toContain("llama-oci: GPU backend cuda");
      return;
    }
    expect(output).toMatch(/LLAMA_OCI_GPU=cuda: (no CUDA toolkit found|the CUDA toolkit at \S+ \(nvcc [\d.]+\) has no cuBLAS library)/);
    expect(output).toContain("or build with LLAMA_OCI_GPU=cpu");
  });

  test("Vulkan without its SDK fails with what is missing", () => {
    const { status, output } = configure("vulkan");
    if (status === 0) {
      expect(output).toContain("llama-oci: GPU backend vulkan");
      return;
    }
    expect(output).toMatch(/LLAMA_OCI_GPU=vulkan: (the Vulkan SDK was not found|the shader compiler glslc was not found)/);
  });

  test("Metal is refused off macOS", () => {
    if (process.platform === "darwin") return;
    const { status, output } = configure("metal");
    expect(status).not.toBe(0);
    expect(output).toContain("LLAMA_OCI_GPU=metal: Metal exists only on macOS");
  });
});

test("a build with nothing changed is skipped", () => {
  expect(existsSync(join(ROOT_DIR, "build", "Release", "llama_oci.node")), "the addon is built (scripts/setup.sh)").toBe(true);
  const result = spawnSync(process.execPath, [join(ROOT_DIR, "scripts", "build-native.mjs"), "--tools"], {
    encoding: "utf8",
    env: { ...process.env, LLAMA_OCI_GPU: "", LLAMA_OCI_BUILD_TOOLS: "1" },
    timeout: 600_000,
  });
  expect(result.status).toBe(0);
  // Either already up to date, or (first run after a change) rebuilt; a second run must then be a no-op.
  const again = spawnSync(process.execPath, [join(ROOT_DIR, "scripts", "build-native.mjs"), "--tools"], {
    encoding: "utf8",
    env: { ...process.env, LLAMA_OCI_GPU: "", LLAMA_OCI_BUILD_TOOLS: "1" },
  });
  expect(again.status).toBe(0);
  expect(again.stderr).toContain("native addon is up to date");
});
