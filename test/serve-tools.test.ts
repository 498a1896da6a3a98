// Tools and reasoning through the server, with the official `openai` and `ollama` clients: a tiny random-weight model
// whose GGUF carries a real family's template (Qwen 2.5 for tools, Qwen 3 for thinking, from the pinned llama.cpp
// source), served in-process by serve(). A required or named tool choice constrains the answer with the template's
// grammar, so even gibberish weights make a valid call; every answer is compared with the library's ChatSession on
// the same model, template, seed and options.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { llama, serve, type ChatTool, type LlamaModel, type LlamaServer } from "../src/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const TEMPLATES = join(ROOT_DIR, "deps", "llama.cpp", "models", "templates");

const WEATHER: ChatTool = {
  name: "get_weather",
  description: "The weather in a city for some days",
  parameters: {
    type: "object",
    properties: { city: { type: "string", enum: ["Paris", "Tokyo"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
    required: ["city", "days"],
    additionalProperties: false,
  },
};
const OPENAI_TOOLS: OpenAI.ChatCompletionTool[] = [{ type: "function", function: { name: WEATHER.name, description: WEATHER.description, parameters: WEATHER.parameters as OpenAI.FunctionParameters } }];

const OLLAMA_WEATHER = { type: "function", function: { name: WEATHER.name, description: WEATHER.description, parameters: WEATHER.parameters as never } };

let workDir: string;
let toolsPath: string;
let model: LlamaModel;
let server: LlamaServer;
let openai: OpenAI;
let ollama: Ollama;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-tools");
  toolsPath = join(workDir, "tiny-qwen.gguf");
  const qwen = await readFile(join(TEMPLATES, "Qwen-Qwen2.5-7B-Instruct.jinja"), "utf8");
  await makeTinyLlama(toolsPath, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 21, chatTemplate: qwen, contextLength: 2048 });
  model = await llama.loadModel(toolsPath, { gpuLayers: 0, contextSize: 2048, threads: 1 });
  server = await serve({ port: 0, models: [toolsPath], threads: 1, parallel: 2, contextSize: 2048 });
  await server.ready;
  openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  ollama = new Ollama({ host: server.url });
}, 120_000);

afterAll(async () => {
  await server?.close();
  await model?.dispose();
  if (workDir) await removeDir(workDir);
});

/** The library's answer to the same question: a fresh chat with the same template, tools and sampling. */
async function libraryCall(question: string, options: { toolChoice: "required" | { name: string }; seed: number }) {
  const chat = model.createChat({ tools: [WEATHER], parallelToolCalls: false });
  try {
    return await chat.send(question, { toolChoice: options.toolChoice, temperature: 1, seed: options.seed, maxTokens: 120 });
  } finally {
    await chat.dispose();
  }
}

function expectWeather(args: string): void {
  const parsed = JSON.parse(args) as { city: string; days: number };
  expect(Object.keys(parsed).sort()).toEqual(["city", "days"]);
  expect(["Paris", "Tokyo"]).toContain(parsed.city);
  expect(Number.isInteger(parsed.days) && parsed.days >= 1 && parsed.days <= 7).toBe(true);
}

describe("openai client", () => {
  test('tool_choice "required": one valid call, finish_reason tool_calls, the same call as the library makes', async () => {
    const expected = await libraryCall("What is the weather in Paris?", { toolChoice: "required", seed: 7 });
    const completion = await openai.chat.completions.create({
      model: "tiny-qwen",
      messages: [{ role: "user", content: "What is the weather in Paris?" }],
      tools: OPENAI_TOOLS,
      tool_choice: "required",
      parallel_tool_calls: false,
      temperature: 1,
      seed: 7,
      max_tokens: 120,
    });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe("tool_calls");
    const calls = choice.message.tool_calls ?? [];
    expect(calls).toHaveLength(1);
    const call = calls[0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(call.type).toBe("function");
    expect(call.id).not.toBe("");
    expect(call.function.name).toBe("get_weather");
    expectWeather(call.function.arguments);
    expect({ name: call.function.name, arguments: call.function.arguments }).toEqual({ name: expected.toolCalls[0]!.name, arguments: expected.toolCalls[0]!.arguments });
  }, 120_000);

  test("streaming a named tool: the id and name come once, the argument deltas add up to the non-streamed call", async () => {
    const request = {
      model: "tiny-qwen",
      messages: [{ role: "user" as const, content: "Weather?" }],
      tools: OPENAI_TOOLS,
      tool_choice: { type: "function" as const, function: { name: "get_weather" } },
      temperature: 1,
      seed: 11,
      max_tokens: 120,
    };
    const whole = await openai.chat.completions.create(request);
    const wholeCall = whole.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    const stream = await openai.chat.completions.create({ ...request, stream: true });
    const deltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const call of chunk.choices[0]?.delta.tool_calls ?? []) deltas.push(call);
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe("tool_calls");
    expect(deltas[0]).toMatchObject({ index: 0, type: "function", function: { name: "get_weather" } });
    expect(deltas[0]!.id).toMatch(/\S/);
    expect(deltas.slice(1).every((d) => d.id === undefined && d.function?.name === undefined)).toBe(true);
    const args = deltas.map((d) => d.function?.arguments ?? "").join("");
    expect(args).toBe(wholeCall.function.arguments);
    expectWeather(args);
  }, 120_000);

  test("the call's result goes back as a tool message and the next answer follows it", async () => {
    const first = await openai.chat.completions.create({
      model: "tiny-qwen",
      messages: [{ role: "user", content: "Weather in Tokyo?" }],
      tools: OPENAI_TOOLS,
      tool_choice: "required",
      temperature: 1,
      seed: 5,
      max_tokens: 120,
    });
    const call = first.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: "user", content: "Weather in Tokyo?" },
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: '{"temperature": 21}' },
    ];
    const next = await openai.chat.completions.create({ model: "tiny-qwen", messages, tools: OPENAI_TOOLS, tool_choice: "none", temperature: 0, max_tokens: 6 });
    expect(next.choices[0]!.finish_reason).toBe("length");
    expect(next.choices[0]!.message.tool_calls ?? []).toEqual([]);
    // The same turn through the library: the prompt renders the call and its result, and the greedy answer is equal.
    const chat = model.createChat({ tools: [WEATHER] });
    try {
      await chat.send("Weather in Tokyo?", { toolChoice: "required", temperature: 1, seed: 5, maxTokens: 120 });
      const answer = await chat.send({ role: "tool", toolCallId: call.id, name: call.function.name, content: '{"temperature": 21}' }, { toolChoice: "none", temperature: 0, maxTokens: 6 });
      expect(next.choices[0]!.message.content).toBe(answer.content);
    } finally {
      await chat.dispose();
    }
  }, 120_000);

  test("a tool call in a message without a name is a 400 naming the field", async () => {
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "tiny-qwen",
        messages: [{ role: "user", content: "x" }, { role: "assistant", tool_calls: [{ id: "a", type: "function", function: { arguments: "{}" } }] }],
        max_tokens: 1,
      }),
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { message: string; param: string } };
    expect(body.error).toMatchObject({ message: "a tool call needs function.name", param: "messages[1].tool_calls[0].function.name" });
  });
});

describe("ollama client", () => {
  test("/api/chat with tools (the model chooses): the same answer as the library's chat", async () => {
    const chat = model.createChat({ tools: [WEATHER] });
    let expected;
    try {
      expected = await chat.send("What is the weather in Paris?", { temperature: 0, maxTokens: 24 });
    } finally {
      await chat.dispose();
    }
    const reply = await ollama.chat({
      model: "tiny-qwen",
      messages: [{ role: "user", content: "What is the weather in Paris?" }],
      tools: [OLLAMA_WEATHER],
      options: { temperature: 0, num_predict: 24 },
      stream: false,
    });
    expect(reply.message.content).toBe(expected.content);
    expect((reply.message.tool_calls ?? []).map((call) => ({ name: call.function.name, arguments: call.function.arguments }))).toEqual(
      expected.toolCalls.map((call) => ({ name: call.name, arguments: JSON.parse(call.arguments) as unknown })),
    );
  }, 120_000);

  test("a call (arguments as an object) and its result (tool_name) in the history: the same next answer as the library's", async () => {
    const call = { id: "call_1", name: "get_weather", arguments: '{"city": "Tokyo", "days": 2}' };
    const chat = model.createChat({
      tools: [WEATHER],
      history: [
        { role: "user", content: "Weather in Tokyo?" },
        { role: "assistant", content: "", toolCalls: [call] },
      ],
    });
    let expected;
    try {
      expected = await chat.send({ role: "tool", toolCallId: call.id, name: call.name, content: '{"temperature": 21}' }, { temperature: 0, maxTokens: 8 });
    } finally {
      await chat.dispose();
    }
    const reply = await ollama.chat({
      model: "tiny-qwen",
      messages: [
        { role: "user", content: "Weather in Tokyo?" },
        { role: "assistant", content: "", tool_calls: [{ function: { name: "get_weather", arguments: { city: "Tokyo", days: 2 } } }] },
        { role: "tool", content: '{"temperature": 21}', tool_name: "get_weather" },
      ],
      tools: [OLLAMA_WEATHER],
      options: { temperature: 0, num_predict: 8 },
      stream: false,
    });
    expect(reply.message.content).toBe(expected.content);
  }, 120_000);
});
