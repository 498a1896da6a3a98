#include "tokenize-worker.h"

#include <climits>
#include <stdexcept>
#include <string>

#include "context.h"
#include "js-args.h"
#include "model.h"
#include "task.h"

namespace llama_oci {

namespace {

class TokenizeTask : public Task {
 public:
  TokenizeTask(ModelPtr model, std::string text, bool addSpecial, bool parseSpecial)
      : model_(std::move(model)), text_(std::move(text)), addSpecial_(addSpecial), parseSpecial_(parseSpecial) {}

 protected:
  void Run() override {
    if (text_.size() > static_cast<size_t>(INT32_MAX)) throw std::runtime_error("text too long to tokenize");
    CheckTokenizer(model_->vocab(), addSpecial_);
    try {
      Tokenize();
    } catch (const std::out_of_range&) {
      // llama.cpp looks tokens up with unordered_map::at, e.g. the byte token of a byte no other token covers.
      throw std::runtime_error("the model's vocabulary lacks a token this text needs (its byte tokens are incomplete)");
    }
  }

  void Tokenize() {
    const auto length = static_cast<int32_t>(text_.size());
    tokens_.resize(text_.size() + 2);
    int32_t n = llama_tokenize(model_->vocab(), text_.data(), length, tokens_.data(),
                               static_cast<int32_t>(tokens_.size()), addSpecial_, parseSpecial_);
    if (n == INT32_MIN) throw std::runtime_error("text too long to tokenize");
    if (n < 0) {
      tokens_.resize(static_cast<size_t>(-n));
      n = llama_tokenize(model_->vocab(), text_.data(), length, tokens_.data(), static_cast<int32_t>(tokens_.size()),
                         addSpecial_, parseSpecial_);
      if (n < 0) throw std::runtime_error("tokenization failed");
    }
    tokens_.resize(static_cast<size_t>(n));
  }

  Napi::Value Result(Napi::Env env) override { return TokensToJs(env, tokens_); }

 private:
  ModelPtr model_;
  std::string text_;
  bool addSpecial_;
  bool parseSpecial_;
  std::vector<llama_token> tokens_;
};

class DetokenizeTask : public Task {
 public:
  DetokenizeTask(ModelPtr model, std::vector<llama_token> tokens, bool removeSpecial, bool unparseSpecial)
      : model_(std::move(model)),
        tokens_(std::move(tokens)),
        removeSpecial_(removeSpecial),
        unparseSpecial_(unparseSpecial) {}

 protected:
  void Run() override {
    CheckTokens(model_->vocab(), tokens_);
    const auto count = static_cast<int32_t>(tokens_.size());
    text_.resize(tokens_.size() * 8 + 16);
    int32_t n = llama_detokenize(model_->vocab(), tokens_.data(), count, text_.data(),
                                 static_cast<int32_t>(text_.size()), removeSpecial_, unparseSpecial_);
    if (n < 0) {
      text_.resize(static_cast<size_t>(-n));
      n = llama_detokenize(model_->vocab(), tokens_.data(), count, text_.data(), static_cast<int32_t>(text_.size()),
                           removeSpecial_, unparseSpecial_);
      if (n < 0) throw std::runtime_error("detokenization failed");
    }
    text_.resize(static_cast<size_t>(n));
  }

  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, text_); }

 private:
  ModelPtr model_;
  std::vector<llama_token> tokens_;
  bool removeSpecial_;
  bool unparseSpecial_;
  std::string text_;
};

}  // namespace

Napi::Promise StartTokenize(Napi::Env env, const ModelPtr& model, std::string text, bool addSpecial,
                            bool parseSpecial) {
  return Task::Start(env, std::make_unique<TokenizeTask>(model, std::move(text), addSpecial, parseSpecial));
}

Napi::Promise StartDetokenize(Napi::Env env, const ModelPtr& model, std::vector<llama_token> tokens, bool removeSpecial,
                              bool unparseSpecial) {
  return Task::Start(env, std::make_unique<DetokenizeTask>(model, std::move(tokens), removeSpecial, unparseSpecial));
}

}  // namespace llama_oci
