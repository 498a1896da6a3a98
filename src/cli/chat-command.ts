/**
 * `llama-oci chat <ref>`: an interactive chat on stdin/stdout using the model's chat template. On a terminal,
 * Ctrl+C stops the answer being written and Ctrl+C at the prompt (or Ctrl+D) exits. With piped input each line is
 * one message and each answer is printed on its own line.
 */
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { CliContext } from "./context.js";
import {
  contextFlags,
  formatTimings,
  GENERATION_OPTIONS,
  GENERATION_USAGE,
  generationFlags,
  MODEL_OPTIONS,
  MODEL_USAGE,
  modelSource,
  openModel,
  parseCommandArgs,
} from "./run-command.js";
import { UsageError } from "./output.js";

export const CHAT_USAGE = `Usage: llama-oci chat <reference> [options]
       llama-oci chat -m <path.gguf> [options]

Chat with a model, formatted with its own chat template. On a terminal, Ctrl+C stops the current answer and
Ctrl+C at the prompt or Ctrl+D exits. Piped input is read one message per line.

Chat:
  -sys, --system <text>       system prompt
  --chat-template-file <path> a Jinja chat template to use instead of the model's

${MODEL_USAGE}

${GENERATION_USAGE.replace("(-1 = until the model stops)", "(default -1 = until the model stops)")}`;

const CHAT_OPTIONS = {
  ...MODEL_OPTIONS,
  ...GENERATION_OPTIONS,
  system: { type: "string" },
  "chat-template-file": { type: "string" },
} as const;

type Input = NodeJS.ReadableStream & { isTTY?: boolean };

export async function chatCommand(argv: string[], cli: CliContext): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, CHAT_OPTIONS);
  if (values.help) {
    cli.stdout.write(`${CHAT_USAGE}\n`);
    return 0;
  }
  modelSource("chat", positionals, values);
  const generation = generationFlags(values, Infinity);
  const templatePath = values["chat-template-file"];
  const chatTemplate = templatePath === undefined ? undefined : await readFile(templatePath, "utf8").catch((error: Error) => {
    throw new UsageError(`cannot read --chat-template-file: ${error.message}`);
  });

  const model = await openModel("chat", positionals, values, cli, contextFlags(values));
  const input: Input = cli.stdin ?? process.stdin;
  const interactive = input.isTTY === true;
  const rl = createInterface({ input, output: interactive ? cli.stdout : undefined, terminal: interactive, prompt: "> " });
  try {
    const chat = model.createChat({ systemPrompt: values.system, chatTemplate });
    if (interactive && !values.quiet) {
      cli.stderr.write(`Chatting with ${model.info.description}. Ctrl+C stops an answer; Ctrl+C at the prompt or Ctrl+D exits.\n`);
    }
    let exitCode = 0;
    let turn: AbortController | undefined;
    rl.on("SIGINT", () => {
      if (turn && !turn.signal.aborted) {
        turn.abort(new Error("interrupted"));
        return;
      }
      exitCode = 130;
      rl.close();
    });
    const onInterrupt = () => {
      exitCode = 130;
      rl.close();
    };
    cli.signal.addEventListener("abort", onInterrupt, { once: true });

    const lines = rl[Symbol.asyncIterator]();
    try {
      for (;;) {
        if (interactive) rl.prompt();
        const next = await lines.next();
        if (next.done || cli.signal.aborted) break;
        const message = next.value.trim();
        if (message === "") continue;
        turn = new AbortController();
        const result = await chat.send(message, {
          ...generation,
          signal: AbortSignal.any([turn.signal, cli.signal]),
          onTextChunk: (text) => void cli.stdout.write(text),
        });
        turn = undefined;
        cli.stdout.write("\n");
        if (values.verbose) cli.stderr.write(`${formatTimings(result.timings)}\n`);
        if (cli.signal.aborted) break;
      }
    } finally {
      cli.signal.removeEventListener("abort", onInterrupt);
    }
    if (interactive && exitCode === 0) cli.stdout.write("\n");
    return cli.signal.aborted ? 130 : exitCode;
  } finally {
    rl.close();
    await model.dispose();
  }
}
