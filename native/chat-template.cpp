#include "chat-template.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <stdexcept>

// llama.cpp's common library (include path deps/llama.cpp/common).
#include <chat.h>
#include <json-schema-to-grammar.h>
#include <json.h>

namespace llama_oci {

namespace {

std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  while (!text.empty() && text.front() == ' ') text.erase(0, 1);
  return text;
}

// The Jinja lexer's view of the source: \r\n and \r become \n, one trailing newline is dropped.
std::string NormalizedSource(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); i++) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') i++;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string LineColumn(const std::string& source, size_t pos) {
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < pos && i < source.size(); i++) {
    if (source[i] == '\n') {
      line++;
      column = 1;
    } else {
      column++;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

void ReplaceAll(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
    text.replace(at, from.size(), to);
}

// A lexer or parser error reads "parser: <message>\n...<40 bytes around the spot, newlines as ↵>...\n    ^": the
// position is found again by looking for that excerpt in the source.
std::string DescribeSyntaxError(const std::string& what, const std::string& source) {
  const size_t firstBreak = what.find('\n');
  std::string message = what.substr(0, firstBreak);
  for (const char* tag : {"lexer: ", "parser: "}) {
    if (message.rfind(tag, 0) == 0) message = message.substr(std::char_traits<char>::length(tag));
  }
  if (firstBreak == std::string::npos) return OneLine(message);
  const size_t secondBreak = what.find('\n', firstBreak + 1);
  if (secondBreak == std::string::npos) return OneLine(message);
  std::string excerpt = what.substr(firstBreak + 1, secondBreak - firstBreak - 1);
  const std::string caretLine = what.substr(secondBreak + 1);
  const size_t caret = caretLine.find('^');
  if (excerpt.size() < 6 || excerpt.compare(0, 3, "...") != 0 || caret == std::string::npos || caret < 3) {
    return OneLine(message);
  }
  const std::string marked = excerpt.substr(3, excerpt.size() - 6);
  // The caret counts bytes of the excerpt as printed, where each newline is the 3-byte "↵".
  const std::string beforeCaret = marked.substr(0, std::min(marked.size(), caret - 3));
  std::string plain = marked;
  ReplaceAll(plain, "\xE2\x86\xB5", "\n");
  std::string plainBefore = beforeCaret;
  ReplaceAll(plainBefore, "\xE2\x86\xB5", "\n");
  for (const std::string& text : {NormalizedSource(source), source}) {
    const size_t at = text.find(plain);
    if (at != std::string::npos) return LineColumn(text, at + plainBefore.size()) + ": " + OneLine(message);
  }
  return OneLine(message);
}

// Some of the Jinja parser's errors say no position ("Unexpected token: %} of type 9"): the parser stops at the
// token that is wrong, so the shortest run of tokens that fails with the same message ends with it.
std::string LocateParseError(const std::string& what, const std::string& source) {
  try {
    jinja::lexer lexer;
    const jinja::lexer_result lexed = lexer.tokenize(source);
    const auto failsAlike = [&](size_t count) {
      jinja::lexer_result prefix{std::vector<jinja::token>(lexed.tokens.begin(), lexed.tokens.begin() + count),
                                 lexed.source};
      try {
        jinja::parse_from_tokens(prefix);
        return false;
      } catch (const std::exception& e) {
        return std::string(e.what()) == what;
      }
    };
    if (lexed.tokens.empty() || !failsAlike(lexed.tokens.size())) return "";
    size_t low = 1;
    size_t high = lexed.tokens.size();
    while (low < high) {
      const size_t mid = low + (high - low) / 2;
      if (failsAlike(mid)) {
        high = mid;
      } else {
        low = mid + 1;
      }
    }
    return LineColumn(lexed.source, lexed.tokens[low - 1].pos);
  } catch (...) {
    return "";
  }
}

void ThrowTemplateError(const std::string& verb, const std::string& name, const std::string& source,
                        const std::exception& e) {
  std::string description = DescribeTemplateError(e.what(), source);
  if (verb == "cannot parse" && description.rfind("line ", 0) != 0) {
    const std::string where = LocateParseError(e.what(), source);
    if (!where.empty()) description = where + ": " + description;
  }
  throw std::runtime_error(verb + " " + name + ": " + description);
}

common_json ParseJson(const std::string& text, const char* what) {
  try {
    return common_json::parse(text);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(what) + " is not valid JSON: " + OneLine(e.what()));
  }
}

std::string BuiltinTemplate(const std::string& templateSource, const std::vector<ChatMessage>& messages,
                            bool addAssistantPrompt) {
  std::vector<llama_chat_message> chat;
  chat.reserve(messages.size());
  for (const auto& message : messages) chat.push_back({message.role.c_str(), message.content.c_str()});
  const char* source = templateSource.c_str();
  size_t capacity = 256;
  for (const auto& message : messages) capacity += 2 * (message.role.size() + message.content.size()) + 64;
  std::string out(capacity, '\0');
  int32_t n = llama_chat_apply_template(source, chat.data(), chat.size(), addAssistantPrompt, out.data(),
                                        static_cast<int32_t>(out.size()));
  if (n > static_cast<int32_t>(out.size())) {
    out.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(source, chat.data(), chat.size(), addAssistantPrompt, out.data(),
                                  static_cast<int32_t>(out.size()));
  }
  if (n < 0) throw std::runtime_error("not one of llama.cpp's built-in templates");
  out.resize(static_cast<size_t>(n));
  return out;
}

common_chat_params Apply(const ChatTemplates& templates, const common_chat_templates_inputs& inputs) {
  try {
    return common_chat_templates_apply(templates.templates.get(), inputs);
  } catch (const std::exception& e) {
    // The template that rendered: the tool-use variant when there are tools and the model has one.
    std::string source =
        inputs.tools.empty() ? "" : common_chat_templates_source(templates.templates.get(), "tool_use");
    if (source.empty()) source = common_chat_templates_source(templates.templates.get());
    ThrowTemplateError("cannot render", templates.name, source, e);
  }
  return {};  // not reached
}

bool EndsWith(const std::string& text, const std::string& end) {
  return text.size() >= end.size() && text.compare(text.size() - end.size(), end.size(), end) == 0;
}

std::string TrimSpace(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) start++;
  return text.substr(start);
}

// A required call starts at once, unless the model is to think first. llama.cpp's grammar for "required" still lets
// the model write content until it opens a call (with its lazy trigger word, "<tool_call>" say), which a weak model
// may never do. The opener is then written into the prompt, so that the grammar holds from the first generated
// token; it counts as part of the answer (the generation prompt the parser reads first). A format whose calls open
// with no fixed word (Llama 3's bare JSON) loses the content before the call from its grammar's root rule instead.
// Left alone: a model that may think (its thoughts come first), or a prompt that leaves the model inside them.
void StartCallAtOnce(const ChatTemplates& templates, const common_chat_templates_inputs& inputs,
                     const ChatRequest& request, common_chat_params& params, std::string* opener) {
  if (params.supports_thinking && inputs.enable_thinking) return;
  const std::string generation = TrimSpace(params.generation_prompt);
  if (!params.thinking_start_tag.empty() && EndsWith(generation, TrimSpace(params.thinking_start_tag))) return;
  common_chat_templates_inputs automatic = inputs;
  automatic.tool_choice = COMMON_CHAT_TOOL_CHOICE_AUTO;
  if (!request.namedTool.empty()) {
    automatic.tools.erase(std::remove_if(automatic.tools.begin(), automatic.tools.end(),
                                         [&](const common_chat_tool& tool) { return tool.name != request.namedTool; }),
                          automatic.tools.end());
  }
  const common_chat_params lazy = Apply(templates, automatic);
  for (const auto& trigger : lazy.grammar_triggers) {
    if (trigger.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD && !trigger.value.empty()) {
      *opener = trigger.value;
      params.prompt += trigger.value;
      params.generation_prompt += trigger.value;
      return;
    }
  }
  // root ::= "<generation prompt>" space until-N? tool-call: the optional content goes.
  static const std::regex content(R"(^(root ::= .*?) until-\d+\?( .*)$)");
  std::string grammar;
  size_t start = 0;
  while (start <= params.grammar.size()) {
    size_t end = params.grammar.find('\n', start);
    if (end == std::string::npos) end = params.grammar.size();
    std::string line = params.grammar.substr(start, end - start);
    if (line.rfind("root ::= ", 0) == 0) line = std::regex_replace(line, content, "$1$2");
    grammar += line;
    if (end < params.grammar.size()) grammar += '\n';
    start = end + 1;
  }
  params.grammar = grammar;
}

}  // namespace

std::string DescribeTemplateError(const std::string& what, const std::string& source) {
  // A statement that failed while rendering: "While executing <Statement> at line L, column C in source:\n
  // <excerpt>\n<caret>\nError: <message>" (llama.cpp's jinja runtime), raise_exception's "Jinja Exception: ..."
  // included.
  static const std::regex executing("While executing \\w+ at (line \\d+, column \\d+) in source:");
  std::smatch match;
  if (std::regex_search(what, match, executing)) {
    const size_t error = what.rfind("\nError: ");
    std::string message = error == std::string::npos ? std::string() : what.substr(error + 8);
    static const std::string raised = "Jinja Exception: ";
    if (message.rfind(raised, 0) == 0) message = "the template raised an error: " + message.substr(raised.size());
    return match[1].str() + ": " + OneLine(message.empty() ? what : message);
  }
  if (what.rfind("lexer: ", 0) == 0 || what.rfind("parser: ", 0) == 0) return DescribeSyntaxError(what, source);
  return OneLine(what);
}

ChatTemplates LoadChatTemplates(const llama_model* model, const std::string& source, const std::string& name) {
  ChatTemplates out;
  out.name = name;
  std::string effective = source;
  if (source.empty()) {
    const char* own = llama_model_chat_template(model, nullptr);
    const char* toolUse = llama_model_chat_template(model, "tool_use");
    out.isDefault = (own == nullptr || *own == '\0') && (toolUse == nullptr || *toolUse == '\0');
    effective = own != nullptr && *own != '\0' ? own : (toolUse != nullptr ? toolUse : "");
    if (out.isDefault) out.name = "llama.cpp's default chat template (ChatML)";
  }
  try {
    out.templates = std::shared_ptr<common_chat_templates>(common_chat_templates_init(model, source).release(),
                                                           common_chat_templates_free);
  } catch (const std::exception& e) {
    // common_chat_templates_init rethrows a copy that lost the message ("std::exception"): parse the source again
    // for the lexer's or parser's own error.
    try {
      common_chat_template probe(effective, "", "");
    } catch (const std::exception& original) {
      ThrowTemplateError("cannot parse", out.name, effective, original);
    }
    ThrowTemplateError("cannot parse", out.name, effective, e);
  }
  return out;
}

ChatFormat FormatChat(const ChatTemplates& templates, const ChatRequest& request) {
  common_chat_templates_inputs inputs;
  inputs.use_jinja = true;
  try {
    inputs.messages = common_chat_msgs_parse_oaicompat(ParseJson(request.messagesJson, "messages"));
    if (!request.toolsJson.empty()) {
      inputs.tools = common_chat_tools_parse_oaicompat(ParseJson(request.toolsJson, "tools"));
    }
    inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(request.toolChoice);
  } catch (const std::exception& e) {
    throw std::runtime_error(OneLine(e.what()));
  }
  auto caps = common_chat_templates_get_caps(templates.templates.get());
  inputs.parallel_tool_calls =
      request.parallelToolCalls < 0 ? caps["supports_parallel_tool_calls"] : request.parallelToolCalls != 0;
  inputs.add_generation_prompt = request.addAssistantPrompt;
  inputs.reasoning_format = request.extractReasoning ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
  inputs.enable_thinking = request.enableThinking;
  inputs.json_schema = request.jsonSchema;
  if (!request.kwargsJson.empty()) {
    const common_json kwargs = ParseJson(request.kwargsJson, "template variables");
    if (!kwargs.is_object()) throw std::runtime_error("template variables must be a JSON object");
    for (const auto& item : kwargs.items()) inputs.chat_template_kwargs[item.key()] = item.value().dump();
    // As llama-server: an enable_thinking variable decides thinking too.
    if (kwargs.contains("enable_thinking") && kwargs.at("enable_thinking").is_boolean()) {
      inputs.enable_thinking = kwargs.at("enable_thinking").get<bool>();
    }
  }

  ChatFormat out;
  out.params = std::make_shared<common_chat_params>(Apply(templates, inputs));
  out.parallelToolCalls = inputs.parallel_tool_calls;
  out.parseToolCalls = !inputs.tools.empty() && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;

  if (!request.namedTool.empty()) {
    // The prompt describes every tool; the grammar and the parser know only the one the call must be to.
    common_chat_templates_inputs named = inputs;
    named.tools.clear();
    for (const auto& tool : inputs.tools) {
      if (tool.name == request.namedTool) named.tools.push_back(tool);
    }
    if (named.tools.empty()) throw std::runtime_error("no tool is named \"" + request.namedTool + "\"");
    named.tool_choice = COMMON_CHAT_TOOL_CHOICE_REQUIRED;
    named.parallel_tool_calls = false;
    common_chat_params constrained = Apply(templates, named);
    out.params->grammar = constrained.grammar;
    out.params->grammar_lazy = constrained.grammar_lazy;
    out.params->grammar_triggers = constrained.grammar_triggers;
    out.params->parser = constrained.parser;
    out.params->format = constrained.format;
    out.parallelToolCalls = false;
  }

  if (inputs.tool_choice == COMMON_CHAT_TOOL_CHOICE_REQUIRED && !out.params->grammar.empty()) {
    StartCallAtOnce(templates, inputs, request, *out.params, &out.forcedOpener);
  }

  out.parser = std::make_shared<common_chat_parser_params>(*out.params);
  out.parser->reasoning_format = inputs.reasoning_format;
  out.parser->parse_tool_calls = out.parseToolCalls;
  if (!out.params->parser.empty()) out.parser->parser.load(out.params->parser);
  return out;
}

std::vector<std::pair<std::string, bool>> ChatTemplateCaps(const ChatTemplates& templates) {
  std::vector<std::pair<std::string, bool>> out;
  for (const auto& [key, value] : common_chat_templates_get_caps(templates.templates.get()))
    out.emplace_back(key, value);
  return out;
}

bool IsBuiltinTemplateName(const std::string& name) {
  std::vector<const char*> names(static_cast<size_t>(std::max(0, llama_chat_builtin_templates(nullptr, 0))));
  llama_chat_builtin_templates(names.data(), names.size());
  for (const char* builtin : names) {
    if (name == builtin) return true;
  }
  return false;
}

std::string ApplyBuiltinChatTemplate(const std::string& name, const std::vector<ChatMessage>& messages,
                                     bool addAssistantPrompt) {
  try {
    return BuiltinTemplate(name, messages, addAssistantPrompt);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot apply the chat template \"" + name + "\": " + e.what());
  }
}

std::string JsonSchemaToGbnf(const std::string& schemaJson) {
  common_json schema;
  try {
    schema = common_json::parse(schemaJson);
  } catch (const std::exception& e) {
    throw std::runtime_error("invalid JSON schema: not valid JSON (" + OneLine(e.what()) + ")");
  }
  try {
    return json_schema_to_grammar(schema, true);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot convert the JSON schema to a grammar: " + OneLine(e.what()));
  }
}

}  // namespace llama_oci
