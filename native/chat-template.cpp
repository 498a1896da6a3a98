#include "chat-template.h"

#include <algorithm>
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
  return text;
}

std::string BuiltinTemplate(const std::string& templateSource, const std::vector<ChatMessage>& messages,
                            bool addAssistantPrompt) {
  std::vector<llama_chat_message> chat;
  chat.reserve(messages.size());
  for (const auto& message : messages) chat.push_back({message.role.c_str(), message.content.c_str()});
  // llama_chat_apply_template recognises its built-in formats by name ("chatml", "llama3", ...) or by telltale
  // pieces of a Jinja source; a model without a template gets ChatML, as common_chat_templates_init does.
  const char* source = templateSource.empty() ? "chatml" : templateSource.c_str();
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

}  // namespace

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

std::shared_ptr<common_chat_templates> LoadChatTemplates(const llama_model* model, const std::string& source,
                                                         std::string* error) {
  try {
    return std::shared_ptr<common_chat_templates>(common_chat_templates_init(model, source).release(),
                                                  common_chat_templates_free);
  } catch (const std::exception& e) {
    if (error != nullptr) *error = OneLine(e.what());
    return nullptr;
  }
}

std::string ApplyChatTemplate(const common_chat_templates* templates, const std::string& templateSource,
                              const std::string& jinjaError, const std::vector<ChatMessage>& messages,
                              bool addAssistantPrompt) {
  std::string error = jinjaError;
  if (templates != nullptr) {
    try {
      common_chat_templates_inputs inputs;
      inputs.use_jinja = true;
      inputs.add_generation_prompt = addAssistantPrompt;
      for (const auto& message : messages) {
        common_chat_msg msg;
        msg.role = message.role;
        msg.content = message.content;
        inputs.messages.push_back(std::move(msg));
      }
      return common_chat_templates_apply(templates, inputs).prompt;
    } catch (const std::exception& e) {
      error = OneLine(e.what());
    }
  }
  try {
    return BuiltinTemplate(templateSource, messages, addAssistantPrompt);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot apply the chat template: Jinja failed (" +
                             (error.empty() ? std::string("unknown error") : error) + ") and it is " + e.what());
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
