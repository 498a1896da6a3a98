#include "model.h"

#include <stdexcept>
#include <string>
#include <vector>

#include <chat.h>
#include <json.h>

#include "chat-template.h"
#include "context.h"
#include "js-args.h"
#include "task.h"
#include "token-tree.h"
#include "tokenize-worker.h"

namespace llama_oci {

const TokenTree& ModelHandle::Tokens() {
  std::call_once(tokensOnce_, [this] { tokens_ = std::make_shared<const TokenTree>(vocab()); });
  return *tokens_;
}

namespace {

const char* kDisposed = "model has been disposed";

// Reads a llama.cpp string getter that works like snprintf (returns the full length, -1 when absent).
template <typename Getter>
bool ReadString(Getter getter, std::string* out) {
  std::vector<char> buffer(256);
  int32_t n = getter(buffer.data(), buffer.size());
  if (n < 0) return false;
  if (static_cast<size_t>(n) >= buffer.size()) {
    buffer.resize(static_cast<size_t>(n) + 1);
    n = getter(buffer.data(), buffer.size());
    if (n < 0) return false;
  }
  out->assign(buffer.data(), static_cast<size_t>(n));
  return true;
}

}  // namespace

bool HasCausalAttention(const llama_model* model) {
  if (llama_model_is_diffusion(model)) return false;
  std::string architecture;
  std::string causal;
  if (!ReadString(
          [&](char* buf, size_t size) { return llama_model_meta_val_str(model, "general.architecture", buf, size); },
          &architecture)) {
    return true;
  }
  const std::string key = architecture + ".attention.causal";
  if (!ReadString([&](char* buf, size_t size) { return llama_model_meta_val_str(model, key.c_str(), buf, size); },
                  &causal)) {
    return true;
  }
  return causal != "false";
}

const char* VocabTypeName(enum llama_vocab_type type) {
  switch (type) {
    case LLAMA_VOCAB_TYPE_NONE: return "none";
    case LLAMA_VOCAB_TYPE_SPM: return "spm";
    case LLAMA_VOCAB_TYPE_BPE: return "bpe";
    case LLAMA_VOCAB_TYPE_WPM: return "wpm";
    case LLAMA_VOCAB_TYPE_UGM: return "ugm";
    case LLAMA_VOCAB_TYPE_RWKV: return "rwkv";
    case LLAMA_VOCAB_TYPE_PLAMO2: return "plamo2";
    default: return "unknown";
  }
}

void CheckTokenizer(const llama_vocab* vocab, bool addSpecial) {
  const enum llama_vocab_type type = llama_vocab_type(vocab);
  if (type == LLAMA_VOCAB_TYPE_NONE) {
    throw std::runtime_error("the model has no tokenizer (its GGUF says tokenizer.ggml.model \"none\")");
  }
  if (!addSpecial) return;
  // What llama_vocab::impl::tokenize asserts before adding the special tokens (llama-vocab.cpp).
  const auto missing = [](const char* what) {
    return std::runtime_error("cannot add the model's special tokens: its vocabulary has no " + std::string(what) +
                              " token (tokenize with addSpecial: false)");
  };
  if (type == LLAMA_VOCAB_TYPE_WPM) {
    if (llama_vocab_bos(vocab) == LLAMA_TOKEN_NULL) throw missing("CLS (BOS)");
    if (llama_vocab_sep(vocab) == LLAMA_TOKEN_NULL) throw missing("SEP");
    return;
  }
  if (type == LLAMA_VOCAB_TYPE_SPM || type == LLAMA_VOCAB_TYPE_BPE || type == LLAMA_VOCAB_TYPE_UGM) {
    if (llama_vocab_get_add_bos(vocab) && llama_vocab_bos(vocab) == LLAMA_TOKEN_NULL) throw missing("BOS");
    if (llama_vocab_get_add_eos(vocab) && llama_vocab_eos(vocab) == LLAMA_TOKEN_NULL) throw missing("EOS");
  }
}

void CheckDetokenizer(const llama_vocab* vocab) {
  if (llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_NONE) {
    throw std::runtime_error("the model has no tokenizer (its GGUF says tokenizer.ggml.model \"none\")");
  }
}

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod<&ModelWrap::Info>("info"),
                         InstanceMethod<&ModelWrap::Metadata>("metadata"),
                         InstanceMethod<&ModelWrap::Tokenize>("tokenize"),
                         InstanceMethod<&ModelWrap::Detokenize>("detokenize"),
                         InstanceMethod<&ModelWrap::ApplyChatTemplate>("applyChatTemplate"),
                         InstanceMethod<&ModelWrap::FormatChat>("formatChat"),
                         InstanceMethod<&ModelWrap::JsonSchemaToGrammar>("jsonSchemaToGrammar"),
                         InstanceMethod<&ModelWrap::CreateContext>("createContext"),
                         InstanceMethod<&ModelWrap::Dispose>("dispose"),
                         InstanceAccessor<&ModelWrap::Disposed>("disposed"),
                     });
}

Napi::Object ModelWrap::New(Napi::Env env, ModelPtr handle) {
  return GetAddonData(env).modelClass.New({Napi::External<ModelPtr>::New(env, &handle)});
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeModel cannot be constructed directly: use loadModel()");
  }
  handle_ = *info[0].As<Napi::External<ModelPtr>>().Data();
  live_ = GetAddonData(info.Env()).live;
  live_->models.insert(this);
}

ModelWrap::~ModelWrap() {
  live_->models.erase(this);
  Release();
}

void ModelWrap::Release() {
  defaultTemplates_.reset();
  templateCache_.clear();
  handle_.reset();
}

const ModelPtr& ModelWrap::Handle(Napi::Env env) const {
  if (!handle_) throw Napi::Error::New(env, kDisposed);
  return handle_;
}

Napi::Value ModelWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const llama_model* model = Handle(env)->model;
  const llama_vocab* vocab = llama_model_get_vocab(model);
  Napi::Object out = Napi::Object::New(env);
  std::string architecture;
  ReadString([&](char* buf, size_t size) { return llama_model_meta_val_str(model, "general.architecture", buf, size); },
             &architecture);
  std::string description;
  ReadString([&](char* buf, size_t size) { return llama_model_desc(model, buf, size); }, &description);
  out.Set("architecture", architecture);
  out.Set("description", description);
  out.Set("parameters", Napi::Number::New(env, static_cast<double>(llama_model_n_params(model))));
  out.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(llama_model_size(model))));
  out.Set("trainContextLength", llama_model_n_ctx_train(model));
  out.Set("embeddingLength", llama_model_n_embd(model));
  const int32_t layers = llama_model_n_layer(model);
  out.Set("layerCount", layers);
  // llama.cpp aborts on the per-layer head counts of a model without layers (e.g. a vocab-only GGUF).
  out.Set("headCount", layers > 0 ? llama_model_n_head(model) : 0);
  out.Set("headCountKv", layers > 0 ? llama_model_n_head_kv(model) : 0);
  out.Set("vocabSize", llama_vocab_n_tokens(vocab));
  const char* chatTemplate = llama_model_chat_template(model, nullptr);
  out.Set("chatTemplate", chatTemplate != nullptr ? Napi::Value(Napi::String::New(env, chatTemplate)) : env.Null());
  out.Set("bosToken", llama_vocab_bos(vocab));
  out.Set("eosToken", llama_vocab_eos(vocab));
  out.Set("eotToken", llama_vocab_eot(vocab));
  out.Set("hasEncoder", llama_model_has_encoder(model));
  out.Set("hasDecoder", llama_model_has_decoder(model));
  out.Set("isRecurrent", llama_model_is_recurrent(model));
  out.Set("isDiffusion", llama_model_is_diffusion(model));
  out.Set("causalAttention", Handle(env)->causal);
  out.Set("vocabType", VocabTypeName(llama_vocab_type(vocab)));
  // What a reranker's input is made of (llama-server's format_prompt_rerank).
  out.Set("sepToken", llama_vocab_sep(vocab));
  out.Set("addBosToken", llama_vocab_get_add_bos(vocab));
  out.Set("addEosToken", llama_vocab_get_add_eos(vocab));
  out.Set("addSepToken", llama_vocab_get_add_sep(vocab));
  const char* rerankTemplate = llama_model_chat_template(model, "rerank");
  out.Set("rerankTemplate",
          rerankTemplate != nullptr ? Napi::Value(Napi::String::New(env, rerankTemplate)) : env.Null());
  out.Set("classifierOutputs", llama_model_n_cls_out(model));
  return out;
}

Napi::Value ModelWrap::Metadata(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const llama_model* model = Handle(env)->model;
  Napi::Object out = Napi::Object::New(env);
  const int32_t count = llama_model_meta_count(model);
  for (int32_t i = 0; i < count; i++) {
    std::string key;
    std::string value;
    if (!ReadString([&](char* buf, size_t size) { return llama_model_meta_key_by_index(model, i, buf, size); }, &key))
      continue;
    if (!ReadString([&](char* buf, size_t size) { return llama_model_meta_val_str_by_index(model, i, buf, size); },
                    &value))
      continue;
    out.Set(key, value);
  }
  return out;
}

Napi::Value ModelWrap::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    std::string text = StringArg(info, 0, "text");
    return StartTokenize(env, handle_, std::move(text), BoolArg(info, 1, true), BoolArg(info, 2, false));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value ModelWrap::Detokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    auto tokens = TokensValue(info[0], "tokens");
    return StartDetokenize(env, handle_, std::move(tokens), BoolArg(info, 1, false), BoolArg(info, 2, false));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

namespace {

const char* TriggerTypeName(common_grammar_trigger_type type) {
  switch (type) {
    case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: return "token";
    case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: return "word";
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: return "pattern";
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: return "patternFull";
    default: return "unknown";
  }
}

Napi::Array StringsToJs(Napi::Env env, const std::vector<std::string>& strings) {
  Napi::Array out = Napi::Array::New(env, strings.size());
  for (size_t i = 0; i < strings.size(); i++) out.Set(static_cast<uint32_t>(i), strings[i]);
  return out;
}

Napi::Object ChatMessageToJs(Napi::Env env, const common_chat_msg& msg) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("content", msg.content);
  out.Set("reasoning", msg.reasoning_content);
  Napi::Array calls = Napi::Array::New(env, msg.tool_calls.size());
  for (size_t i = 0; i < msg.tool_calls.size(); i++) {
    Napi::Object call = Napi::Object::New(env);
    call.Set("name", msg.tool_calls[i].name);
    call.Set("arguments", msg.tool_calls[i].arguments);
    call.Set("id", msg.tool_calls[i].id);
    calls.Set(static_cast<uint32_t>(i), call);
  }
  out.Set("toolCalls", calls);
  return out;
}

// A conversation in one of llama.cpp's built-in formats: the prompt, and a parser that takes the answer as content.
ChatFormat BuiltinChat(const std::string& name, const ChatRequest& request) {
  std::vector<ChatMessage> messages;
  const common_json json = common_json::parse(request.messagesJson);
  for (const auto& message : json) {
    std::string content;
    const auto& value = message.contains("content") ? message.at("content") : common_json();
    if (value.is_string()) {
      content = value.get<std::string>();
    } else if (value.is_array()) {
      for (const auto& part : value) {
        if (!content.empty()) content += "\n";
        content += part.value("text", "");
      }
    }
    messages.push_back({message.value("role", ""), content});
  }
  ChatFormat format;
  format.params = std::make_shared<common_chat_params>();
  format.params->prompt = ApplyBuiltinChatTemplate(name, messages, request.addAssistantPrompt);
  format.parser = std::make_shared<common_chat_parser_params>();
  return format;
}

// parse(text, partial): the answer so far as { content, reasoning, toolCalls } (llama.cpp's chat parser). A final
// parse (partial false) throws when the text does not follow the template's format.
Napi::Function ChatParserFunction(Napi::Env env, std::shared_ptr<common_chat_parser_params> parser) {
  return Napi::Function::New(
      env,
      [parser](const Napi::CallbackInfo& info) -> Napi::Value {
        Napi::Env e = info.Env();
        const std::string text = StringArg(info, 0, "text");
        const bool partial = BoolArg(info, 1, false);
        try {
          return ChatMessageToJs(e, common_chat_parse(text, partial, *parser));
        } catch (const Napi::Error&) {
          throw;
        } catch (const std::exception& ex) {
          throw Napi::Error::New(e, ex.what());
        }
      },
      "parse");
}

}  // namespace

const ChatTemplates& ModelWrap::Templates(Napi::Env env, const std::string& source, const std::string& name) {
  const llama_model* model = Handle(env)->model;
  if (source.empty()) {
    if (!defaultTemplates_) {
      defaultTemplates_ = std::make_unique<ChatTemplates>(
          LoadChatTemplates(model, "", name.empty() ? "the GGUF's chat template (tokenizer.chat_template)" : name));
    }
    if (!name.empty() && !defaultTemplates_->isDefault) defaultTemplates_->name = name;
    return *defaultTemplates_;
  }
  auto found = templateCache_.find(source);
  if (found != templateCache_.end()) {
    found->second.name = name.empty() ? "the chat template given" : name;
    return found->second;
  }
  ChatTemplates loaded = LoadChatTemplates(model, source, name.empty() ? "the chat template given" : name);
  if (templateCache_.size() >= 8) templateCache_.clear();
  return templateCache_.emplace(source, std::move(loaded)).first->second;
}

Napi::Value ModelWrap::ApplyChatTemplate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle(env);
  if (info.Length() < 1 || !info[0].IsArray())
    throw Napi::TypeError::New(env, "messages must be an array of { role, content }");
  std::vector<ChatMessage> messages;
  common_json json = common_json::array();
  auto array = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    if (!item.IsObject()) throw Napi::TypeError::New(env, "messages must be an array of { role, content }");
    auto object = item.As<Napi::Object>();
    messages.push_back({StringField(object, "role", ""), StringField(object, "content", "")});
    if (messages.back().role.empty()) throw Napi::TypeError::New(env, "message " + std::to_string(i) + " has no role");
    json.push_back({{"role", messages.back().role}, {"content", messages.back().content}});
  }
  const bool addAssistantPrompt = BoolArg(info, 1, true);
  const bool hasOverride = info.Length() > 2 && info[2].IsString();
  if (info.Length() > 2 && !hasOverride && !info[2].IsNull() && !info[2].IsUndefined()) {
    throw Napi::TypeError::New(env, "template must be a string or null");
  }
  const std::string name = info.Length() > 3 && info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  try {
    const std::string source = hasOverride ? info[2].As<Napi::String>().Utf8Value() : "";
    if (hasOverride && IsBuiltinTemplateName(source)) {
      return Napi::String::New(env, ApplyBuiltinChatTemplate(source, messages, addAssistantPrompt));
    }
    ChatRequest request;
    request.messagesJson = json.dump();
    request.addAssistantPrompt = addAssistantPrompt;
    return Napi::String::New(env, llama_oci::FormatChat(Templates(env, source, name), request).params->prompt);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value ModelWrap::FormatChat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle(env);
  Napi::Object options = ObjectArg(info, 0, "chat request");
  ChatRequest request;
  request.messagesJson = StringField(options, "messages", "[]");
  request.toolsJson = StringField(options, "tools", "");
  request.toolChoice = StringField(options, "toolChoice", "auto");
  request.namedTool = StringField(options, "namedTool", "");
  Napi::Value parallel = options.Get("parallelToolCalls");
  if (parallel.IsBoolean()) request.parallelToolCalls = parallel.As<Napi::Boolean>().Value() ? 1 : 0;
  request.addAssistantPrompt = BoolField(options, "addAssistantPrompt", true);
  request.enableThinking = BoolField(options, "enableThinking", true);
  request.extractReasoning = BoolField(options, "extractReasoning", true);
  request.kwargsJson = StringField(options, "templateKwargs", "");
  request.jsonSchema = StringField(options, "jsonSchema", "");
  const std::string source = StringField(options, "template", "");
  const std::string name = StringField(options, "templateName", "");
  try {
    ChatTemplates builtin;
    ChatFormat format;
    const bool isBuiltin = IsBuiltinTemplateName(source) && source != "chatml";
    if (isBuiltin) {
      // One of llama.cpp's built-in formats by name: text messages only, the answer is all content.
      if (!request.toolsJson.empty()) {
        throw std::runtime_error("\"" + source +
                                 "\" is one of llama.cpp's built-in formats, which cannot describe tools: give a Jinja "
                                 "chat template");
      }
      builtin.name = "the built-in chat format \"" + source + "\"";
      format = BuiltinChat(source, request);
    }
    const ChatTemplates& templates = isBuiltin ? builtin : Templates(env, source, name);
    if (!isBuiltin) format = llama_oci::FormatChat(templates, request);
    const common_chat_params& params = *format.params;
    Napi::Object out = Napi::Object::New(env);
    out.Set("prompt", params.prompt);
    out.Set("format", common_chat_format_name(params.format));
    out.Set("grammar", params.grammar);
    out.Set("grammarLazy", params.grammar_lazy);
    Napi::Array triggers = Napi::Array::New(env, params.grammar_triggers.size());
    for (size_t i = 0; i < params.grammar_triggers.size(); i++) {
      Napi::Object trigger = Napi::Object::New(env);
      trigger.Set("type", TriggerTypeName(params.grammar_triggers[i].type));
      trigger.Set("value", params.grammar_triggers[i].value);
      triggers.Set(static_cast<uint32_t>(i), trigger);
    }
    out.Set("grammarTriggers", triggers);
    out.Set("preservedTokens", StringsToJs(env, params.preserved_tokens));
    out.Set("additionalStops", StringsToJs(env, params.additional_stops));
    out.Set("generationPrompt", params.generation_prompt);
    out.Set("supportsThinking", params.supports_thinking);
    out.Set("thinkingStartTag", params.thinking_start_tag);
    out.Set("thinkingEndTags", StringsToJs(env, params.thinking_end_tags));
    out.Set("parallelToolCalls", format.parallelToolCalls);
    out.Set("parseToolCalls", format.parseToolCalls);
    out.Set("forcedToolCallOpener", format.forcedOpener);
    out.Set("templateName", templates.name);
    out.Set("usesDefaultTemplate", templates.isDefault);
    Napi::Object caps = Napi::Object::New(env);
    if (!isBuiltin) {
      for (const auto& [key, value] : ChatTemplateCaps(templates)) caps.Set(key, value);
    }
    out.Set("caps", caps);
    out.Set("parse", ChatParserFunction(env, format.parser));
    return out;
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value ModelWrap::JsonSchemaToGrammar(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle(env);
  const std::string schema = StringArg(info, 0, "schema");
  try {
    return Napi::String::New(env, JsonSchemaToGbnf(schema));
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value ModelWrap::CreateContext(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    return llama_oci::CreateContext(env, handle_, ObjectArg(info, 0, "context options"));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

void ModelWrap::Dispose(const Napi::CallbackInfo&) { Release(); }

Napi::Value ModelWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !handle_); }

}  // namespace llama_oci
