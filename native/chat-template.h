// Chat templates, tool calls and JSON-schema grammars through llama.cpp's common library (chat.h: Jinja templates,
// the chat parser with its tool-call formats, json-schema-to-grammar).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "llama.h"

struct common_chat_templates;
struct common_chat_params;
struct common_chat_parser_params;

namespace llama_oci {

struct ChatMessage {
  std::string role;
  std::string content;
};

// A parsed Jinja chat template and the name errors call it by ("the GGUF's chat template", a file's path, ...).
struct ChatTemplates {
  std::shared_ptr<common_chat_templates> templates;
  std::string name;
  // The model has no template of its own and none was given: llama.cpp's default (ChatML) stands in.
  bool isDefault = false;
};

// Parses `source`, or the model's own template when `source` is empty (llama.cpp's ChatML when it has none). Throws
// std::runtime_error naming the template and the line when it does not parse.
ChatTemplates LoadChatTemplates(const llama_model* model, const std::string& source, const std::string& name);

// One conversation to format: what common_chat_templates_apply takes, as llama-server builds it.
struct ChatRequest {
  std::string messagesJson;         // OpenAI-format messages (common_chat_msgs_parse_oaicompat)
  std::string toolsJson;            // OpenAI-format tools; empty: none
  std::string toolChoice = "auto";  // "auto", "none" or "required"
  std::string namedTool;            // with "required": the call must be to this tool
  int parallelToolCalls = -1;       // -1: what the template supports
  bool addAssistantPrompt = true;
  bool enableThinking = true;
  bool extractReasoning = true;  // reasoning_format "deepseek" (reasoning apart from content), else "none"
  std::string kwargsJson;        // extra template variables (llama-server's chat_template_kwargs), a JSON object
  std::string jsonSchema;        // a response format the answer must follow, as JSON text
};

// What the template gives for a request: the prompt, the grammar that constrains a tool call (lazy: once a trigger
// appears), the words that must stay whole tokens, and the parser of the answer.
struct ChatFormat {
  std::shared_ptr<common_chat_params> params;
  std::shared_ptr<common_chat_parser_params> parser;
  bool parallelToolCalls = false;
  bool parseToolCalls = false;
  // With a required call: the word that opens it, written at the end of the prompt (see FormatChat).
  std::string forcedOpener;
};

// Throws std::runtime_error naming the template (and the line, for Jinja errors, raise_exception included).
ChatFormat FormatChat(const ChatTemplates& templates, const ChatRequest& request);

// Template capabilities as llama.cpp detects them (supports_tools, supports_tool_calls, ...).
std::vector<std::pair<std::string, bool>> ChatTemplateCaps(const ChatTemplates& templates);

// Whether `name` names one of llama.cpp's built-in templates ("chatml", "llama3", ...): as an override it selects
// that format directly (as Jinja it would parse as plain text and come out verbatim).
bool IsBuiltinTemplateName(const std::string& name);
std::string ApplyBuiltinChatTemplate(const std::string& name, const std::vector<ChatMessage>& messages,
                                     bool addAssistantPrompt);

// JSON schema text -> GBNF. Throws std::runtime_error for invalid JSON or an unsupported schema.
std::string JsonSchemaToGbnf(const std::string& schemaJson);

// "line 3, column 7: <message>" from one of llama.cpp's Jinja errors (lexer, parser, or a statement that failed
// while rendering), `source` being the template's text; the error's first line when it says no position.
std::string DescribeTemplateError(const std::string& what, const std::string& source);

}  // namespace llama_oci
