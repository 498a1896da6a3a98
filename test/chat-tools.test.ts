// Tool calls and reasoning through llama.cpp's chat layer, with the chat templates of real model families from the
// pinned llama.cpp source (models/templates/*.jinja):
// - rendering with tools, the tool-call grammar, its triggers and the parsed answers equal what llama.cpp's own common
//   code gives for the same request (build/bin/llama-oci-chat-oracle, built with the tools by scripts/setup.sh);
// - known model outputs parse to the messages llama.cpp's tests/test-chat.cpp expects for them, and their streamed
//   deltas add up to the same message;
// - a tiny random-weight model, constrained by the template's grammar, makes valid calls (required, a named tool),
//   lazy grammars wait for their trigger and stay off while the model thinks;
// - ChatSession: tools, tool results as "tool" messages, deltas, the artifact's template winning over the GGUF's,
//   and template errors that name the template and the line.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, LlamaOciError, type ChatDelta, type ChatMessage, type ChatTool, type LlamaModel, type ParsedChatMessage } from "../src/index.js";
import { ChatOutputParser } from "../src/llama/chat-format.js";
import { dockerV01 } from "./helpers/artifacts.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const ORACLE = join(ROOT_DIR, "build", "bin", "llama-oci-chat-oracle");
const TEMPLATES = join(ROOT_DIR, "deps", "llama.cpp", "models", "templates");

let workDir: string;
let modelPath: string;
let model: LlamaModel;

const template = (name: string) => readFile(join(TEMPLATES, `${name}.jinja`), "utf8");

// The tools of llama.cpp's tests/test-chat.cpp.
const SPECIAL: ChatTool = {
  name: "special_function",
  description: "I'm special",
  parameters: { type: "object", properties: { arg1: { type: "integer", description: "The arg." } }, required: ["arg1"] },
};
const SPECIAL_OPT: ChatTool = {
  name: "special_function_with_opt",
  description: "I'm special but have optional stuff",
  parameters: { type: "object", properties: { arg1: { type: "integer", description: "The arg." }, arg2: { type: "integer", description: "The optional arg." } }, required: ["arg1"] },
};
const PYTHON: ChatTool = {
  name: "python",
  description: "an ipython interpreter",
  parameters: { type: "object", properties: { code: { type: "string", description: "Python code to execute." } }, required: ["code"] },
};
const USER: ChatMessage = { role: "user", content: "Hey there!" };

/** A conversation with a tool call and its result, to render in every family's template. */
const WITH_TOOL_RESULT: ChatMessage[] = [
  { role: "system", content: "You are a helpful assistant." },
  USER,
  { role: "assistant", content: "", toolCalls: [{ id: "123456789", name: "special_function", arguments: '{"arg1": 1}' }] },
  { role: "tool", toolCallId: "123456789", name: "special_function", content: "Sunny" },
  { role: "user", content: "And tomorrow?" },
];

interface Case {
  output: string;
  tools?: ChatTool[];
  thinking?: boolean;
  parallel?: boolean;
  /** What tests/test-chat.cpp expects the output to parse to. */
  expect: Partial<{ content: string; reasoning: string; toolCalls: { name: string; arguments: string; id?: string }[] }>;
  /** test-chat.cpp's expect_reconstruction(): rendering the parsed answer gives back prompt + output. */
  reconstruct?: boolean;
  /**
   * llama.cpp's own code fails this case for a model with a BOS token (test-chat.cpp reads templates without a
   * model): the output then does not parse, for llama.cpp as for llama-oci, and test-chat.cpp's expectation is
   * checked with llama.cpp's code run without a model.
   */
  failsWithBos?: boolean;
}

const HELLO = "Hello, world!\nWhat's up?";
const CALL = [{ name: "special_function", arguments: '{"arg1": 1}' }];

/** Cases of tests/test-chat.cpp (test_template_output_peg_parsers), by template. */
const FAMILIES: Record<string, Case[]> = {
  "meta-llama-Llama-3.1-8B-Instruct": [
    { output: HELLO, tools: [SPECIAL], expect: { content: HELLO }, reconstruct: true },
    // No case of its own in test-chat.cpp: compared with llama.cpp's parse only.
    { output: '{"name": "special_function", "parameters": {"arg1": 1}}', tools: [SPECIAL], expect: { toolCalls: CALL } },
  ],
  "meta-llama-Llama-3.2-3B-Instruct": [{ output: HELLO, tools: [SPECIAL], expect: { content: HELLO }, reconstruct: true }],
  "meta-llama-Llama-3.3-70B-Instruct": [{ output: HELLO, tools: [PYTHON], expect: { content: HELLO }, reconstruct: true }],
  "Qwen-Qwen2.5-7B-Instruct": [
    { output: HELLO, expect: { content: HELLO }, reconstruct: true },
    { output: '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', tools: [SPECIAL], expect: { toolCalls: CALL }, reconstruct: true },
  ],
  "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": [
    { output: HELLO, expect: { content: HELLO }, reconstruct: true },
    { output: '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', tools: [SPECIAL], expect: { toolCalls: CALL }, reconstruct: true },
  ],
  "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": [
    { output: '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>', tools: [SPECIAL], expect: { toolCalls: CALL } },
    { output: `${HELLO}<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>`, tools: [SPECIAL], expect: { content: HELLO, toolCalls: CALL } },
  ],
  "Qwen-QwQ-32B": [
    { output: "Let me think about this...\n</think>\nThe answer is 42.", thinking: true, expect: { content: "The answer is 42.", reasoning: "Let me think about this..." } },
    { output: "</think>Hello, world!", expect: { content: "Hello, world!" } },
  ],
  // No PEG case of its own in test-chat.cpp: compared with llama.cpp's parse only.
  "Qwen-Qwen3-0.6B": [
    { output: "<think>\nI'm\nthinking\n</think>\n\nHello, world!\nWhat's up?", expect: { content: HELLO, reasoning: "I'm\nthinking" } },
    { output: '<think>\nI need the weather.\n</think>\n\n<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', tools: [SPECIAL], expect: { reasoning: "I need the weather.", toolCalls: CALL } },
  ],
  "mistralai-Mistral-Nemo-Instruct-2407": [
    { output: HELLO, expect: { content: HELLO }, reconstruct: true },
    {
      output: '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]',
      tools: [SPECIAL],
      expect: { toolCalls: [{ ...CALL[0]!, id: "123456789" }] },
      reconstruct: true,
    },
  ],
  "Mistral-Small-3.2-24B-Instruct-2506": [
    { output: HELLO, expect: { content: HELLO }, reconstruct: true },
    { output: '[TOOL_CALLS]special_function[CALL_ID]123456789[ARGS]{"arg1": 1}', tools: [SPECIAL], parallel: false, expect: { toolCalls: [{ ...CALL[0]!, id: "123456789" }] }, failsWithBos: true },
    {
      output: '[TOOL_CALLS]special_function[CALL_ID]000000001[ARGS]{"arg1": 1}[TOOL_CALLS]special_function_with_opt[CALL_ID]000000002[ARGS]{"arg1": 1, "arg2": 2}',
      tools: [SPECIAL, SPECIAL_OPT],
      parallel: true,
      expect: {
        toolCalls: [
          { name: "special_function", arguments: '{"arg1": 1}', id: "000000001" },
          { name: "special_function_with_opt", arguments: '{"arg1": 1, "arg2": 2}', id: "000000002" },
        ],
      },
      failsWithBos: true,
    },
  ],
  "unsloth-mistral-Devstral-Small-2507": [
    { output: HELLO, expect: { content: HELLO }, reconstruct: true },
    { output: '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}', tools: [SPECIAL], expect: { toolCalls: CALL }, reconstruct: true },
    { output: `${HELLO}[TOOL_CALLS]special_function[ARGS]{"arg1": 1}`, tools: [SPECIAL], expect: { content: HELLO, toolCalls: CALL }, reconstruct: true },
  ],
  "openai-gpt-oss-120b": [
    { output: `<|channel|>final<|message|>${HELLO}`, expect: { content: HELLO } },
    { output: `<|channel|>commentary<|message|>${HELLO}`, expect: { content: HELLO } },
    { output: `<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>final<|message|>${HELLO}`, expect: { content: HELLO, reasoning: "I'm\nthinking" } },
    { output: ' to=functions.special_function<|channel|>analysis<|message|>{"arg1": 1}', tools: [SPECIAL], expect: { toolCalls: CALL } },
    { output: '<|channel|>analysis to=functions.special_function<|message|>{"arg1": 1}', tools: [SPECIAL], expect: { toolCalls: CALL } },
    { output: ' to=functions.special_function<|channel|>analysis <|constrain|>json<|message|>{"arg1": 1}', tools: [SPECIAL], expect: { toolCalls: CALL } },
    {
      output: `<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant to=functions.special_function<|channel|>analysis<|message|>{"arg1": 1}`,
      tools: [SPECIAL],
      expect: { reasoning: "I'm\nthinking", toolCalls: CALL },
    },
  ],
  "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": [
    { output: `</think>${HELLO}`, expect: { content: HELLO } },
    { output: `I'm\nthinking</think>${HELLO}`, thinking: true, expect: { content: HELLO, reasoning: "I'm\nthinking" } },
  ],
  "llama-cpp-deepseek-r1": [
    { output: `</think>${HELLO}`, expect: { content: HELLO } },
    { output: `I'm\nthinking</think>${HELLO}`, expect: { content: HELLO, reasoning: "I'm\nthinking" } },
    {
      output: '</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```json\n{"arg1": 1}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
      tools: [SPECIAL],
      parallel: true,
      expect: { toolCalls: CALL },
    },
  ],
  "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": [
    { output: `</think>${HELLO}`, thinking: true, expect: { content: HELLO } },
    { output: `I'm\nthinking</think>${HELLO}`, expect: { content: HELLO, reasoning: "I'm\nthinking" } },
    {
      output: '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```json\n{"arg1": 1}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
      tools: [SPECIAL],
      thinking: false,
      expect: { toolCalls: CALL },
    },
  ],
};

interface OracleAnswer {
  prompt: string;
  format: string;
  grammar: string;
  grammar_lazy: boolean;
  grammar_triggers: { type: string; value: string }[];
  preserved_tokens: string[];
  additional_stops: string[];
  generation_prompt: string;
  supports_thinking: boolean;
  thinking_start_tag: string;
  thinking_end_tags: string[];
  parsed: ({ content: string; reasoning: string; tool_calls: { name: string; arguments: string; id: string }[] } | { error: string })[];
  fatal?: string;
}

/** llama.cpp's own answer (common_chat_templates_apply and common_chat_parse, as llama-server calls them). */
async function oracle(request: object): Promise<OracleAnswer> {
  const child = run(ORACLE, [], { maxBuffer: 64 * 1024 * 1024 });
  child.child.stdin!.end(JSON.stringify({ model: modelPath, ...request }));
  const { stdout } = await child;
  const answer = JSON.parse(stdout) as OracleAnswer;
  if (answer.fatal) throw new Error(`oracle: ${answer.fatal}`);
  return answer;
}

/** OpenAI-format messages and tools, as llama-server receives them (and the oracle takes them). */
function openAi(messages: ChatMessage[]): object[] {
  return messages.map((m) => ({
    role: m.role,
    content: m.content,
    ...(m.reasoning ? { reasoning_content: m.reasoning } : {}),
    ...(m.toolCalls ? { tool_calls: m.toolCalls.map((c) => ({ type: "function", id: c.id, function: { name: c.name, arguments: c.arguments } })) } : {}),
    ...(m.toolCallId ? { tool_call_id: m.toolCallId } : {}),
    ...(m.name ? { name: m.name } : {}),
  }));
}

const openAiTools = (tools: ChatTool[]) => tools.map((tool) => ({ type: "function", function: tool }));

/** test-chat.cpp's assert_msg_equals with ignore_whitespace_differences: stripped text, arguments as JSON. */
function expectMessage(actual: ParsedChatMessage, expected: Case["expect"]): void {
  expect(actual.content.trim()).toBe((expected.content ?? "").trim());
  expect(actual.reasoning.trim()).toBe((expected.reasoning ?? "").trim());
  expect(actual.toolCalls.map((c) => c.name)).toEqual((expected.toolCalls ?? []).map((c) => c.name));
  for (const [i, call] of (expected.toolCalls ?? []).entries()) {
    expect(JSON.parse(actual.toolCalls[i]!.arguments)).toEqual(JSON.parse(call.arguments));
    if (call.id !== undefined) expect(actual.toolCalls[i]!.id).toBe(call.id);
  }
}

/** The deltas of `output` fed one character at a time, added up (test-chat.cpp does the same with its diffs). */
function accumulate(parser: ChatOutputParser, output: string): { sum: ParsedChatMessage; message: ParsedChatMessage } {
  const sum: ParsedChatMessage = { content: "", reasoning: "", toolCalls: [] };
  const add = (delta: ChatDelta | undefined) => {
    if (!delta) return;
    sum.content += delta.content;
    sum.reasoning += delta.reasoning;
    for (const call of delta.toolCalls) {
      const target = (sum.toolCalls[call.index] ??= { id: "", name: "", arguments: "" });
      if (call.id !== undefined) target.id = call.id;
      if (call.name !== undefined) target.name = call.name;
      target.arguments += call.arguments;
    }
  };
  for (const char of output) add(parser.push(char));
  const finished = parser.finish(true);
  add(finished.delta);
  return { sum, message: finished.message };
}

beforeAll(async () => {
  if (!existsSync(ORACLE)) throw new Error(`${ORACLE} is missing: run 'bash scripts/setup.sh' (it builds the tools with the addon)`);
  workDir = await makeTempDir("llama-oci-chat-tools");
  modelPath = join(workDir, "tiny.gguf");
  await makeTinyLlama(modelPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 3, contextLength: 2048 });
  model = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 2048, threads: 2 });
  model.onWarning = () => {};
});

afterAll(async () => {
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

describe("real families' templates: the same as llama.cpp's own chat code, and test-chat.cpp's expectations", () => {
  for (const [name, cases] of Object.entries(FAMILIES)) {
    test(name, async () => {
      const source = await template(name);
      for (const c of cases) {
        const tools = c.tools ?? [];
        const options = { template: source, templateName: name, tools, parallelToolCalls: c.parallel, thinking: c.thinking };
        const format = model.formatChat([USER], options);
        const answer = await oracle({
          template: source,
          messages: openAi([USER]),
          tools: tools.length > 0 ? openAiTools(tools) : null,
          parallel_tool_calls: c.parallel ?? null,
          enable_thinking: c.thinking ?? true,
          outputs: [{ text: c.output }],
        });
        const what = `${name}, output ${JSON.stringify(c.output)}`;
        expect({
          prompt: format.prompt,
          format: format.format,
          grammar: format.grammar,
          grammarLazy: format.grammarLazy,
          triggers: format.grammarTriggers,
          preserved: format.preservedTokens,
          stops: format.additionalStops,
          generationPrompt: format.generationPrompt,
          supportsThinking: format.supportsThinking,
          thinkingStart: format.thinkingStartTag,
          thinkingEnd: format.thinkingEndTags,
        }, what).toEqual({
          prompt: answer.prompt,
          format: answer.format,
          grammar: answer.grammar,
          grammarLazy: answer.grammar_lazy,
          triggers: answer.grammar_triggers,
          preserved: answer.preserved_tokens,
          stops: answer.additional_stops,
          generationPrompt: answer.generation_prompt,
          supportsThinking: answer.supports_thinking,
          thinkingStart: answer.thinking_start_tag,
          thinkingEnd: answer.thinking_end_tags,
        });
        const theirs = answer.parsed[0]!;
        if (c.failsWithBos) {
          expect(theirs, what).toEqual({ error: "The model produced output that does not match the expected peg-native format" });
          expect(() => format.parse(c.output, false)).toThrow("The model produced output that does not match the expected peg-native format");
          const modelless = await oracle({
            model: "",
            template: source,
            messages: openAi([USER]),
            tools: openAiTools(tools),
            parallel_tool_calls: c.parallel ?? false,
            outputs: [{ text: c.output }],
          });
          const parsedThere = modelless.parsed[0]!;
          if ("error" in parsedThere) throw new Error(`${what}: llama.cpp without a model fails too: ${parsedThere.error}`);
          expectMessage({ content: parsedThere.content, reasoning: parsedThere.reasoning, toolCalls: parsedThere.tool_calls }, c.expect);
          continue;
        }
        if ("error" in theirs) throw new Error(`${what}: llama.cpp's parser failed: ${theirs.error}`);
        expect(format.parse(c.output, false), what).toEqual({ content: theirs.content, reasoning: theirs.reasoning, toolCalls: theirs.tool_calls });
        const whole = new ChatOutputParser(format, () => "made-up-id");
        whole.append(c.output);
        const final = whole.finish(true).message;
        expectMessage(final, c.expect);
        // Streamed one character at a time, the deltas add up to the same answer (the ids: those the stream gave).
        const streamed = accumulate(new ChatOutputParser(format, () => "made-up-id"), c.output);
        expect(streamed.sum.content, what).toBe(final.content);
        expect(streamed.sum.reasoning, what).toBe(final.reasoning);
        expect(streamed.sum.toolCalls.map(({ name, arguments: a }) => ({ name, arguments: a })), what).toEqual(final.toolCalls.map(({ name, arguments: a }) => ({ name, arguments: a })));
        expect(streamed.sum.toolCalls, what).toEqual(streamed.message.toolCalls);
        if (c.reconstruct) {
          const again = model.formatChat([USER, { role: "assistant", content: final.content, ...(final.toolCalls.length > 0 ? { toolCalls: final.toolCalls } : {}) }], {
            ...options,
            addAssistantPrompt: false,
          });
          expect(again.prompt.startsWith(format.prompt + c.output), `${what}: reconstruction\n${again.prompt}`).toBe(true);
        }
      }
      // A whole conversation with a tool call and its result renders as llama.cpp renders it, with tool_choice
      // "required" too (the grammar of a required call).
      const withTools = c0Tools(cases);
      for (const choice of ["auto", "required"] as const) {
        if (choice === "required" && withTools.length === 0) continue;
        let format;
        try {
          format = model.formatChat(WITH_TOOL_RESULT, { template: source, tools: withTools.length > 0 ? withTools : [SPECIAL], toolChoice: choice });
        } catch (error) {
          // A template that gives no grammar for a required call says so (Llama 3's: it is bare JSON in auto mode).
          expect(error, name).toBeInstanceOf(LlamaOciError);
          continue;
        }
        const answer = await oracle({ template: source, messages: openAi(WITH_TOOL_RESULT), tools: openAiTools(withTools.length > 0 ? withTools : [SPECIAL]), tool_choice: choice });
        // A required call may open at once: its opener ends the prompt (see formatChat).
        expect(format.prompt, `${name} (${choice})`).toBe(answer.prompt + format.forcedToolCallOpener);
        expect(format.grammarLazy).toBe(answer.grammar_lazy);
        if (choice === "auto") expect(format.grammar).toBe(answer.grammar);
      }
    });
  }
});

function c0Tools(cases: Case[]): ChatTool[] {
  return cases.find((c) => c.tools && c.tools.length > 0)?.tools ?? [];
}

/** The schema of the generated-call tests: finite, so a random model's call ends. */
const WEATHER: ChatTool = {
  name: "get_weather",
  description: "The weather of a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string", enum: ["Paris", "Tokyo"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
    required: ["city", "days"],
    additionalProperties: false,
  },
};
const TIME: ChatTool = { name: "get_time", description: "The time in a city", parameters: { type: "object", properties: { city: { type: "string", enum: ["Lima"] } }, required: ["city"], additionalProperties: false } };

function expectWeatherCall(call: { name: string; arguments: string; id: string }): void {
  expect(call.name).toBe("get_weather");
  expect(call.id).not.toBe("");
  const args = JSON.parse(call.arguments) as { city: string; days: number };
  expect(["Paris", "Tokyo"]).toContain(args.city);
  expect(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7).toBe(true);
  expect(Object.keys(args).sort()).toEqual(["city", "days"]);
}

describe("generated calls: a random-weight model constrained by the template's grammar", () => {
  for (const name of ["Qwen-Qwen2.5-7B-Instruct", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "mistralai-Mistral-Nemo-Instruct-2407", "meta-llama-Llama-3.1-8B-Instruct", "Qwen-Qwen3-0.6B"]) {
    test(`${name}: tool choice "required" gives a valid call, and a named tool a call to it`, async () => {
      const chat = model.createChat({ chatTemplate: await template(name), tools: [WEATHER, TIME], parallelToolCalls: false, thinking: false });
      try {
        for (const seed of [1]) {
          const reply = await chat.send("What is the weather in Paris?", { toolChoice: "required", temperature: 1, seed, maxTokens: 200 });
          expect(reply.toolCalls.length, `${name} seed ${seed}: ${JSON.stringify(reply.text)}`).toBe(1);
          const call = reply.toolCalls[0]!;
          expect(["get_weather", "get_time"]).toContain(call.name);
          expect(() => JSON.parse(call.arguments) as unknown).not.toThrow();
          expect(reply.message.toolCalls).toEqual(reply.toolCalls);
          await chat.reset();
        }
        const deltas: ChatDelta[] = [];
        const named = await chat.send("Weather?", { toolChoice: { name: "get_weather" }, temperature: 1, seed: 3, maxTokens: 200, onDelta: (d) => deltas.push(d) });
        expect(named.toolCalls.length, JSON.stringify(named.text)).toBe(1);
        expectWeatherCall(named.toolCalls[0]!);
        // The streamed deltas give the call's id and name once, then its arguments piece by piece.
        const callDeltas = deltas.flatMap((d) => d.toolCalls);
        expect(callDeltas[0]).toMatchObject({ index: 0, id: named.toolCalls[0]!.id, name: "get_weather" });
        expect(callDeltas.map((d) => d.arguments).join("")).toBe(named.toolCalls[0]!.arguments);
        expect(callDeltas.slice(1).every((d) => d.name === undefined && d.id === undefined)).toBe(true);
      } finally {
        await chat.dispose();
      }
    }, 300_000);
  }

  test("the answer to a call goes back as a tool message, and the next turn reads it", { timeout: 300_000 }, async () => {
    const source = await template("Qwen-Qwen2.5-7B-Instruct");
    const chat = model.createChat({ chatTemplate: source, tools: [WEATHER] });
    try {
      const reply = await chat.send("Weather in Tokyo?", { toolChoice: "required", parallelToolCalls: false, temperature: 1, seed: 5, maxTokens: 200 });
      expect(reply.toolCalls).toHaveLength(1);
      const call = reply.toolCalls[0]!;
      const next = await chat.send({ role: "tool", toolCallId: call.id, name: call.name, content: '{"temperature": 21}' }, { temperature: 0, maxTokens: 4, toolChoice: "none" });
      expect(next.stopReason).toBe("maxTokens");
      const history = chat.history;
      expect(history.map((m) => m.role)).toEqual(["user", "assistant", "tool", "assistant"]);
      expect(history[1]!.toolCalls).toEqual(reply.toolCalls);
      expect(history[2]).toEqual({ role: "tool", toolCallId: call.id, name: "get_weather", content: '{"temperature": 21}' });
      // The prompt of that turn: the template's own rendering of the call and of its result.
      const prompt = model.applyChatTemplate(history.slice(0, 3), { template: source, tools: [WEATHER] });
      // Arguments are written out again by the template (llama.cpp hands them to it as an object).
      const args = JSON.parse(call.arguments) as { city: string; days: number };
      expect(prompt).toContain(`<tool_call>\n{"name": "get_weather", "arguments": {"city": "${args.city}", "days": ${args.days}}}\n</tool_call>`);
      expect(prompt).toContain('<|im_start|>user\n<tool_response>\n{"temperature": 21}\n</tool_response><|im_end|>');
    } finally {
      await chat.dispose();
    }
  });

  test("without parallel calls the answer ends once a second call begins; a call cut short stays out of the history", { timeout: 300_000 }, async () => {
    const chat = model.createChat({ chatTemplate: await template("Qwen-Qwen2.5-7B-Instruct"), tools: [WEATHER], parallelToolCalls: false });
    try {
      // The grammar allows more calls; the answer stops at the second one's opening, as a stop string would.
      const reply = await chat.send("Weather?", { toolChoice: "required", temperature: 1, seed: 7, maxTokens: 400 });
      expect(reply.stopReason).toBe("stop");
      expect(reply.toolCalls).toHaveLength(1);
      expect(reply.timings.generatedTokens).toBeLessThan(400);
      expectWeatherCall(reply.toolCalls[0]!);
      await chat.reset();
      // The same answer cut inside its arguments: just after the first token that completes the key "city".
      let inside = 1;
      while (!(await model.detokenize(reply.tokens.subarray(0, inside))).includes('"city"')) inside++;
      const cut = await chat.send("Weather?", { toolChoice: "required", temperature: 1, seed: 7, maxTokens: inside });
      expect(reply.text.startsWith(cut.text)).toBe(true);
      expect(cut.stopReason).toBe("maxTokens");
      expect(cut.toolCalls).toHaveLength(1);
      expect(() => JSON.parse(cut.toolCalls[0]!.arguments) as unknown).toThrow();
      expect(chat.history[1]!.toolCalls).toBeUndefined();
      // The next turn still renders.
      expect((await chat.send("Go on", { maxTokens: 2, toolChoice: "none" })).stopReason).toBe("maxTokens");
    } finally {
      await chat.dispose();
    }
  });

  test("a grammar or a JSON schema cannot be combined with a tool-call grammar", async () => {
    const chat = model.createChat({ chatTemplate: await template("Qwen-Qwen2.5-7B-Instruct"), tools: [WEATHER] });
    try {
      await expect(chat.send("x", { jsonSchema: { type: "object" }, maxTokens: 2 })).rejects.toThrow(/cannot be combined with tools/);
    } finally {
      await chat.dispose();
    }
  });
});

describe("lazy grammars in the sampler", () => {
  const GREEDY = { temperature: 0, maxTokens: 24 } as const;
  const grammarOf = (trigger: string) => ({
    grammar: `root ::= ${JSON.stringify(trigger)} " TRIGGERED"`,
    lazy: true,
    triggers: [{ type: "word", value: trigger }],
    prefill: "",
    thinkingStart: "",
    thinkingEnd: [] as string[],
    preservedTokens: [] as string[],
  });

  test("the grammar waits for its trigger word, then holds; a pattern trigger too; in the batched loop as well", async () => {
    for (const parallel of [1, 2]) {
      const context = await model.createContext({ contextSize: 512, parallel });
      try {
        const prompt = await model.tokenize("Once upon a time", { addSpecial: true, parseSpecial: false });
        const free = await context.completeWithMeta(prompt, GREEDY);
        // A word the model writes anyway, a few tokens in.
        const words = free.text.split(/(?<=\S)(?=\s)/);
        expect(words.length).toBeGreaterThan(3);
        const before = words.slice(0, 2).join("");
        const trigger = words[2]!;
        const constrained = await context.completeWithMeta(prompt, { ...GREEDY, chatGrammar: grammarOf(trigger) });
        expect(constrained.text, `parallel ${parallel}`).toBe(`${before}${trigger} TRIGGERED`);
        expect(constrained.stopReason).toBe("eos");
        const pattern = await context.completeWithMeta(prompt, {
          ...GREEDY,
          chatGrammar: { ...grammarOf(trigger), triggers: [{ type: "pattern", value: trigger.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") }] },
        });
        expect(pattern.text).toBe(`${before}${trigger} TRIGGERED`);
        // A trigger the model never writes: the grammar never applies.
        const never = await context.completeWithMeta(prompt, { ...GREEDY, chatGrammar: grammarOf("zzqqxx-never") });
        expect(never.text).toBe(free.text);
      } finally {
        await context.dispose();
      }
    }
  });

  test("while the model thinks (the prompt opened a thinking block), a trigger does not start the grammar", async () => {
    const context = await model.createContext({ contextSize: 512 });
    try {
      const prompt = await model.tokenize("Once upon a time <think>\n", { addSpecial: true, parseSpecial: false });
      const free = await context.completeWithMeta(prompt, GREEDY);
      const words = free.text.split(/(?<=\S)(?=\s)/);
      const trigger = words[2]!;
      const thinking = { ...grammarOf(trigger), prefill: "<think>\n", thinkingStart: "<think>", thinkingEnd: ["</think>"] };
      expect((await context.completeWithMeta(prompt, { ...GREEDY, chatGrammar: thinking })).text).toBe(free.text);
      // Not thinking (no tag in what the template wrote): the same trigger starts it.
      const awake = { ...thinking, prefill: "" };
      expect((await context.completeWithMeta(prompt, { ...GREEDY, chatGrammar: awake })).text).toBe(`${words.slice(0, 2).join("")}${trigger} TRIGGERED`);
    } finally {
      await context.dispose();
    }
  });
});

describe("templates", () => {
  let registry: RegistryHandle;
  const ARTIFACT_TEMPLATE = "{% for m in messages %}<<{{ m.role }}>> {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<<assistant>> {% endif %}";
  const GGUF_TEMPLATE = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";

  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
  });

  async function pushed(tag: string, chatTemplate: string | undefined): Promise<LlamaModel> {
    const path = join(workDir, `${tag}.gguf`);
    await makeTinyLlama(path, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 4, chatTemplate: GGUF_TEMPLATE, contextLength: 512, nLayer: 1 });
    await pushArtifact({ registryUrl: registry.url, repository: "ai/templated" }, tag, dockerV01({ ggufs: [await readFile(path)], ...(chatTemplate !== undefined ? { chatTemplate } : {}) }));
    return llama.fromDocker(`${registry.host}/ai/templated:${tag}`, { cacheDir: join(workDir, "cache"), env: { PATH: process.env.PATH, HOME: workDir }, gpuLayers: 0 });
  }

  test("the artifact's chat template layer wins over the GGUF's, for applyChatTemplate and chats", async () => {
    const withLayer = await pushed("layer", ARTIFACT_TEMPLATE);
    try {
      expect(withLayer.chatTemplate).toBe(ARTIFACT_TEMPLATE);
      expect(withLayer.chatTemplateName).toBe(`the artifact's chat template (${withLayer.pull!.chatTemplatePath!})`);
      expect(withLayer.info.chatTemplate).toBe(GGUF_TEMPLATE);
      expect(withLayer.applyChatTemplate([USER])).toBe("<<user>> Hey there!\n<<assistant>> ");
      const chat = withLayer.createChat();
      const reply = await chat.send("Hi", { temperature: 0, maxTokens: 3 });
      const expected = await withLayer.completeWithMeta("<<user>> Hi\n<<assistant>> ", { temperature: 0, maxTokens: 3 });
      expect(reply.text).toBe(expected.text);
      await chat.dispose();
    } finally {
      await withLayer.dispose();
    }
    const without = await pushed("plain", undefined);
    try {
      expect(without.chatTemplate).toBeUndefined();
      expect(without.applyChatTemplate([USER])).toBe("[user] Hey there!\n[assistant] ");
    } finally {
      await without.dispose();
    }
  });

  test("a template that fails is an error naming it and the line (raise_exception included), never a fallback", async () => {
    const broken = await pushed("broken", "{% for m in messages %}\n{{ m.content }\n{% endfor %}");
    try {
      const chat = broken.createChat();
      const error = await chat.send("Hi", { maxTokens: 1 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LlamaOciError);
      expect((error as LlamaOciError).code).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toBe(`cannot parse the artifact's chat template (${broken.pull!.chatTemplatePath!}): line 2, column 12: Parser Error: Expected }} (Got })`);
      await chat.dispose();
    } finally {
      await broken.dispose();
    }
    const strict = "{% if messages[0].role != 'system' %}{{ raise_exception('the first message must be a system message') }}{% endif %}{{ messages[0].content }}";
    expect(() => model.applyChatTemplate([USER], { template: strict, templateName: "strict.jinja" })).toThrow(
      "cannot render strict.jinja: line 1, column 56: the template raised an error: the first message must be a system message",
    );
    const chat = model.createChat({ chatTemplate: strict });
    await expect(chat.send("Hi")).rejects.toThrow("cannot render the chat session's chatTemplate: line 1, column 56: the template raised an error: the first message must be a system message");
    await chat.dispose();
  });

  test("a model without any template gets llama.cpp's ChatML and a warning, once", async () => {
    const warnings: string[] = [];
    const bare = await llama.loadModel(modelPath, { gpuLayers: 0, contextSize: 256 });
    bare.onWarning = (message) => warnings.push(message);
    try {
      expect(bare.applyChatTemplate([USER])).toBe("<|im_start|>user\nHey there!<|im_end|>\n<|im_start|>assistant\n");
      bare.applyChatTemplate([USER]);
      expect(warnings).toEqual(["tiny.gguf has no chat template: chats use llama.cpp's default (ChatML), which may not be the format the model was trained on; give one with the chatTemplate option"]);
    } finally {
      await bare.dispose();
    }
  });

  test("content parts (text) keep working, and a template without tools refuses them", async () => {
    const parts: ChatMessage = { role: "user", content: [{ type: "text", text: "Hey" }, { type: "text", text: "there" }] };
    expect(model.applyChatTemplate([parts], { template: await template("Qwen-Qwen2.5-7B-Instruct") })).toContain("<|im_start|>user\nHey\nthere<|im_end|>");
    expect(() => model.formatChat([USER], { template: "{% for m in messages %}{{ m.content }}{% endfor %}", templateName: "plain.jinja", tools: [SPECIAL] })).toThrow(
      "plain.jinja does not support tools",
    );
    expect(() => model.formatChat([USER], { template: "llama3", tools: [SPECIAL] })).toThrow(/built-in formats, which cannot describe tools/);
    expect(() => model.formatChat([USER], { tools: [{ name: "bad name!" }] })).toThrow(/needs a name of 1 to 64 letters/);
    expect(() => model.formatChat([USER], { tools: [SPECIAL], toolChoice: { name: "other" } })).toThrow(/names the tool "other", which is not among the tools/);
  });
});
