// The chat oracle: what llama.cpp's own common chat code makes of a request, the way llama-server reads one
// (common_chat_msgs_parse_oaicompat, common_chat_tools_parse_oaicompat, common_chat_templates_apply, then
// common_chat_parse of model outputs). test/chat-tools.test.ts compares llama-oci's answers with these.
//
//   llama-oci-chat-oracle < request.json > answer.json
//
// request: { "model": "<GGUF path, loaded vocab-only for its BOS/EOS; none: no model>", "template": "<jinja source>",
//            "messages": [OpenAI messages],
//            "tools": [OpenAI tools] | null, "tool_choice": "auto" | "none" | "required",
//            "parallel_tool_calls": bool | null, "enable_thinking": bool, "reasoning_format": "deepseek" | "none",
//            "add_generation_prompt": bool, "outputs": [{ "text": "...", "partial": bool }] }
// answer:  { "prompt", "format", "grammar", "grammar_lazy", "grammar_triggers": [{ "type", "value" }],
//            "preserved_tokens", "additional_stops", "generation_prompt", "supports_thinking",
//            "thinking_start_tag", "thinking_end_tags",
//            "parsed": [{ "content", "reasoning", "tool_calls": [{ "name", "arguments", "id" }] } | { "error" }] }
#include <chat.h>
#include <json.h>
#include <llama.h>

#include <iostream>
#include <iterator>
#include <string>

using json = common_json;

static const char* TriggerType(common_grammar_trigger_type type) {
  switch (type) {
    case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: return "token";
    case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: return "word";
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: return "pattern";
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: return "patternFull";
    default: return "unknown";
  }
}

static bool Flag(const json& object, const char* key, bool fallback) {
  return object.contains(key) && object.at(key).is_boolean() ? object.at(key).get<bool>() : fallback;
}

static std::string Text(const json& object, const char* key, const char* fallback) {
  return object.contains(key) && object.at(key).is_string() ? object.at(key).get<std::string>() : fallback;
}

int main() {
  try {
    const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    const json request = json::parse(input);
    llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
    llama_backend_init();
    llama_model_params modelParams = llama_model_default_params();
    modelParams.vocab_only = true;
    // Without a model (as tests/test-chat.cpp reads templates): no BOS or EOS token.
    const std::string modelPath = Text(request, "model", "");
    llama_model* model = modelPath.empty() ? nullptr : llama_model_load_from_file(modelPath.c_str(), modelParams);
    if (model == nullptr && !modelPath.empty()) throw std::runtime_error("cannot load the model's vocabulary");
    auto templates = common_chat_templates_init(model, request.at("template").get<std::string>());
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.messages = common_chat_msgs_parse_oaicompat(request.at("messages"));
    inputs.tools = common_chat_tools_parse_oaicompat(request.contains("tools") ? request.at("tools") : json());
    inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(Text(request, "tool_choice", "auto"));
    auto caps = common_chat_templates_get_caps(templates.get());
    inputs.parallel_tool_calls = Flag(request, "parallel_tool_calls", caps["supports_parallel_tool_calls"]);
    inputs.enable_thinking = Flag(request, "enable_thinking", true);
    inputs.add_generation_prompt = Flag(request, "add_generation_prompt", true);
    inputs.reasoning_format = common_reasoning_format_from_name(Text(request, "reasoning_format", "deepseek"));

    const common_chat_params params = common_chat_templates_apply(templates.get(), inputs);
    json triggers = json::array();
    for (const auto& trigger : params.grammar_triggers) {
      triggers.push_back({{"type", TriggerType(trigger.type)}, {"value", trigger.value}});
    }
    json answer = {
        {"prompt", params.prompt},
        {"format", common_chat_format_name(params.format)},
        {"grammar", params.grammar},
        {"grammar_lazy", params.grammar_lazy},
        {"grammar_triggers", triggers},
        {"preserved_tokens", params.preserved_tokens},
        {"additional_stops", params.additional_stops},
        {"generation_prompt", params.generation_prompt},
        {"supports_thinking", params.supports_thinking},
        {"thinking_start_tag", params.thinking_start_tag},
        {"thinking_end_tags", params.thinking_end_tags},
    };

    common_chat_parser_params parser(params);
    parser.reasoning_format = inputs.reasoning_format;
    parser.parse_tool_calls = !inputs.tools.empty() && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
    if (!params.parser.empty()) parser.parser.load(params.parser);
    json parsed = json::array();
    const json outputs = request.contains("outputs") ? request.at("outputs") : json::array();
    for (const auto& output : outputs) {
      try {
        const common_chat_msg msg = common_chat_parse(Text(output, "text", ""), Flag(output, "partial", false), parser);
        json calls = json::array();
        for (const auto& call : msg.tool_calls) {
          calls.push_back({{"name", call.name}, {"arguments", call.arguments}, {"id", call.id}});
        }
        parsed.push_back({{"content", msg.content}, {"reasoning", msg.reasoning_content}, {"tool_calls", calls}});
      } catch (const std::exception& e) {
        parsed.push_back({{"error", e.what()}});
      }
    }
    answer["parsed"] = parsed;
    std::cout << answer.dump() << std::endl;
    templates.reset();
    if (model != nullptr) llama_model_free(model);
    return 0;
  } catch (const std::exception& e) {
    std::cout << json{{"fatal", e.what()}}.dump() << std::endl;
    return 1;
  }
}
