/** `llama-oci inspect <ref>`: manifest, config and GGUF header facts on stdout, as text or --json. */
import { parseArgs } from "node:util";
import { inspectModel } from "../oci/inspect.js";
import { formatInspect } from "./inspect-format.js";
import { UsageError, jsonOutput } from "./output.js";
import type { CliContext } from "./context.js";
import { terminalSafe } from "../util/terminal.js";
import { REGISTRY_FLAGS, REGISTRY_USAGE, registryOptions } from "./registry-io.js";

export const INSPECT_USAGE = `Usage: llama-oci inspect <reference> [options]

Show a model's manifest, config and GGUF header (architecture, parameters, quantization, context length,
chat template, tensors, shards). A cached model is read from the cache, with no network; otherwise only the
GGUF header is read from the registry (HTTP Range requests), never the whole file.

  <reference>                 [registry/]repository[:tag|@digest]; a bare name means docker.io/ai/<name>

Options:
  --remote                    ask the registry even when the model is cached
  --json                      print the whole result as JSON (the full chat template and GGUF metadata)
  --offline                   use the cache only, no network (also LLAMA_OCI_OFFLINE=1)
  --platform <os/arch[/v]>    which child of an image index to inspect (with --remote or an uncached model)
${REGISTRY_USAGE}
  -q, --quiet                 no warnings
  -v, --verbose               trace every HTTP exchange on stderr (also LLAMA_OCI_DEBUG=1)
  -h, --help                  show this help`;

export async function inspectCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...REGISTRY_FLAGS, remote: { type: "boolean" }, json: { type: "boolean" }, offline: { type: "boolean" }, platform: { type: "string" } },
  });
  if (values.help) {
    cli.stdout.write(`${INSPECT_USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`inspect takes exactly one reference (got ${positionals.length})`);
  if (values.remote && values.offline) throw new UsageError("--remote and --offline exclude each other");

  const result = await inspectModel(positionals[0]!, {
    ...registryOptions(values),
    remote: values.remote,
    offline: values.offline,
    platform: values.platform,
    verbose: values.verbose || undefined,
    env: cli.env,
    signal: cli.signal,
    onWarning: (message) => void (values.quiet ? undefined : cli.stderr.write(`warning: ${terminalSafe(message)}\n`)),
    onDebug: (message) => cli.stderr.write(`debug: ${terminalSafe(message)}\n`),
  });
  cli.stdout.write(values.json ? jsonOutput(result) : formatInspect(result));
  return 0;
}
