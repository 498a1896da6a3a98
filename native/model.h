// NativeModel: owns one llama_model. Contexts and running workers hold the handle too, so dispose() only drops the
// JS object's share and the model is freed when its last user lets go.
#pragma once

#include <napi.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "addon.h"
#include "chat-template.h"
#include "llama.h"

namespace llama_oci {

class TokenTree;

// "<arch>.attention.causal" of the GGUF (default true), false for diffusion models (llama.h has no getter).
bool HasCausalAttention(const llama_model* model);
// "none", "spm", "bpe", "wpm", "ugm", "rwkv" or "plamo2".
const char* VocabTypeName(enum llama_vocab_type type);
// Throws std::runtime_error when llama.cpp would abort tokenizing with this vocabulary: one without a tokenizer
// (type "none"), or special tokens that tokenization must add but the vocabulary does not have.
void CheckTokenizer(const llama_vocab* vocab, bool addSpecial);
// Throws std::runtime_error when llama.cpp would abort turning tokens of this vocabulary into text.
void CheckDetokenizer(const llama_vocab* vocab);

struct ModelHandle {
  llama_model* model = nullptr;
  std::string path;
  bool vocabOnly = false;
  // Whether the model attends causally (can generate): false when the GGUF turns causal attention off or the model
  // is a diffusion model. llama.cpp asserts on a prompt longer than the micro-batch of a non-causal model.
  bool causal = true;

  ModelHandle(llama_model* model, std::string path, bool vocabOnly)
      : model(model), path(std::move(path)), vocabOnly(vocabOnly), causal(HasCausalAttention(model)) {}
  ~ModelHandle() { llama_model_free(model); }
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;

  const llama_vocab* vocab() const { return llama_model_get_vocab(model); }
  // The vocabulary as a tree of token texts (token-tree.h), built on first use (any thread) and kept.
  const TokenTree& Tokens();

 private:
  std::once_flag tokensOnce_;
  std::shared_ptr<const TokenTree> tokens_;
};

using ModelPtr = std::shared_ptr<ModelHandle>;

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Wraps a loaded model in a new JS NativeModel (JS thread).
  static Napi::Object New(Napi::Env env, ModelPtr handle);

  explicit ModelWrap(const Napi::CallbackInfo& info);
  ~ModelWrap() override;

  // Drops this object's share of the model (idempotent; also used by the environment's cleanup hook).
  void Release();
  // The handle, or a thrown "model has been disposed".
  const ModelPtr& Handle(Napi::Env env) const;

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Metadata(const Napi::CallbackInfo& info);
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value Detokenize(const Napi::CallbackInfo& info);
  Napi::Value ApplyChatTemplate(const Napi::CallbackInfo& info);
  Napi::Value FormatChat(const Napi::CallbackInfo& info);
  Napi::Value JsonSchemaToGrammar(const Napi::CallbackInfo& info);
  Napi::Value CreateContext(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  // The model's own template (`source` empty) or `source`, parsed once (a few recent ones are kept).
  const ChatTemplates& Templates(Napi::Env env, const std::string& source, const std::string& name);

  ModelPtr handle_;
  std::shared_ptr<LiveObjects> live_;
  // The model's own chat template and recent overrides, parsed once (JS thread only).
  std::unique_ptr<ChatTemplates> defaultTemplates_;
  std::map<std::string, ChatTemplates> templateCache_;
};

}  // namespace llama_oci
