// Chat templates and JSON-schema grammars through llama.cpp's common library.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "llama.h"

struct common_chat_templates;

namespace llama_oci {

struct ChatMessage {
  std::string role;
  std::string content;
};

// Parses a Jinja chat template: `source`, or the model's own when `source` is empty (ChatML when it has none).
// Null, with `error` set, when the template does not parse; the built-in fallback still gets its chance.
std::shared_ptr<common_chat_templates> LoadChatTemplates(const llama_model* model, const std::string& source,
                                                         std::string* error);

// Formats the conversation with `templates` (Jinja), or when that is null or fails, with llama.cpp's built-in
// templates matched against `templateSource`. Throws std::runtime_error when neither can format it.
std::string ApplyChatTemplate(const common_chat_templates* templates, const std::string& templateSource,
                              const std::string& jinjaError, const std::vector<ChatMessage>& messages,
                              bool addAssistantPrompt);

// Whether `name` names one of llama.cpp's built-in templates ("chatml", "llama3", ...): as an override it selects
// that format directly (as Jinja it would parse as plain text and come out verbatim).
bool IsBuiltinTemplateName(const std::string& name);
std::string ApplyBuiltinChatTemplate(const std::string& name, const std::vector<ChatMessage>& messages,
                                     bool addAssistantPrompt);

// JSON schema text -> GBNF. Throws std::runtime_error for invalid JSON or an unsupported schema.
std::string JsonSchemaToGbnf(const std::string& schemaJson);

}  // namespace llama_oci
