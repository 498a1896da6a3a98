// NativeContext.generate: reuses the cached prompt prefix, evaluates the rest of the prompt in batches, then samples
// and decodes one token at a time, streaming whole-UTF-8 text pieces to onText until a stop condition.
#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "batch.h"
#include "context.h"
#include "generate-params.h"
#include "js-args.h"
#include "sampling.h"
#include "stop-strings.h"
#include "task.h"
#include "utf8.h"

namespace llama_oci {

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

class GenerateTask : public Task {
 public:
  GenerateTask(ContextPtr context, const Napi::Object& params) : context_(std::move(context)) {
    GenerateParams parsed = ReadGenerateParams(params);
    prompt_ = std::move(parsed.prompt);
    maxTokens_ = parsed.maxTokens;
    sampling_ = std::move(parsed.sampling);
    stops_ = std::move(parsed.stops);
    filter_ = StopStringFilter(stops_);
    ignoreEos_ = parsed.ignoreEos;
    contextShift_ = parsed.contextShift;
    keep_ = parsed.keep;
    cacheReuse_ = parsed.cacheReuse;
    media_ = std::move(parsed.media);
    stop_.user = std::move(parsed.abort);
    if (!parsed.onText.IsEmpty()) onText_ = Napi::Persistent(parsed.onText);
  }

 protected:
  void Run() override {
    ContextSession session(context_, stop_);
    ContextHandle& context = *context_;
    const llama_vocab* vocab = context.vocab();
    if (context.embeddings)
      throw std::runtime_error("this context was created for embeddings: create one without embeddings to generate");
    CheckCanDecode(context, "generate text");
    if (prompt_.empty()) throw std::runtime_error("cannot generate from an empty prompt (pass at least one token)");
    CheckPromptTokens(vocab, prompt_, media_.get());
    if (media_ && media_->model() != context.model)
      throw std::runtime_error("this prompt's media were tokenized for another model");
    const size_t contextSize = context.contextSize;
    if (prompt_.size() > contextSize) {
      throw std::runtime_error("prompt of " + std::to_string(prompt_.size()) + " tokens does not fit the context of " +
                               std::to_string(contextSize) + " tokens");
    }
    Sampler sampler(vocab, sampling_, context.contextSize, TokenTreeFor(*context.model, sampling_));
    for (llama_token token : prompt_) sampler.AcceptPrompt(token);

    // The prefix already in the KV cache is kept; the last prompt token is always decoded again for its logits.
    size_t prefix = 0;
    const size_t common = std::min(context.cached.size(), prompt_.size());
    while (prefix < common && context.cached[prefix] == prompt_[prefix]) prefix++;
    if (prefix == prompt_.size()) prefix--;
    if (cacheReuse_ > 0 && !media_) {
      // Chunks of the cache that the prompt continues with after the prefix (a conversation whose oldest turns were
      // dropped) are shifted into place instead of evaluated again.
      prefix = ReuseCacheChunks(context.memory(), 0, context.cached, prompt_, prefix, cacheReuse_);
      context.SetCached(context.cached.size());
    }
    if (media_) prefix = media_->SafePrefix(prefix);
    prefix = context.TruncateMemory(prefix);
    cachedTokens_ = prefix;

    const auto promptStart = Clock::now();
    const bool promptDone = EvaluatePrompt(session, prefix);
    promptMs_ = MillisecondsSince(promptStart);

    const auto generateStart = Clock::now();
    if (promptDone) {
      Generate(session, sampler);
      resamples_ = sampler.resamples();
    } else {
      stopReason_ = "abort";
    }
    if (!filter_.stopped()) {
      Emit(filter_.Push(utf8_.Flush()));
      Emit(filter_.Flush());
    }
    generateMs_ = MillisecondsSince(generateStart);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("text", Napi::String::New(env, text_));
    result.Set("tokens", TokensToJs(env, generated_));
    result.Set("stopReason", Napi::String::New(env, stopReason_));
    result.Set("promptTokens", Napi::Number::New(env, static_cast<double>(prompt_.size())));
    result.Set("cachedTokens", Napi::Number::New(env, static_cast<double>(cachedTokens_)));
    result.Set("generatedTokens", Napi::Number::New(env, static_cast<double>(generated_.size())));
    result.Set("promptMs", Napi::Number::New(env, promptMs_));
    result.Set("generateMs", Napi::Number::New(env, generateMs_));
    result.Set("discardedTokens", Napi::Number::New(env, static_cast<double>(discarded_)));
    result.Set("grammarResamples", Napi::Number::New(env, static_cast<double>(resamples_)));
    return result;
  }

 private:
  // Decodes prompt_[from..] in chunks of at most n_batch tokens. Returns false when aborted.
  bool EvaluatePrompt(const ContextSession& session, size_t from) {
    ContextHandle& context = *context_;
    const size_t batchSize = context.batchSize;
    Batch batch(static_cast<int32_t>(batchSize));
    for (size_t pos = from; pos < prompt_.size();) {
      if (session.StopRequested()) return false;
      if (media_ && media_->MediaAt(pos)) {
        // An image or audio clip: encoded and decoded whole by libmtmd (vision.h).
        const size_t length = media_->MediaLength(pos);
        const int32_t rc = media_->Evaluate(context, pos, 0);
        if (rc == 2 || (rc != 0 && session.StopRequested())) return false;
        if (rc != 0)
          throw std::runtime_error("cannot evaluate an image or audio clip of the prompt (error " + std::to_string(rc) +
                                   ")");
        context.RecordDecode(length, 1);
        context.cached.insert(context.cached.end(), prompt_.begin() + pos, prompt_.begin() + pos + length);
        context.SetCached(context.cached.size());
        pos += length;
        continue;
      }
      const size_t n = std::min(batchSize, media_ ? media_->TextRun(pos) : prompt_.size() - pos);
      batch.Clear();
      for (size_t i = pos; i < pos + n; i++) batch.Add(prompt_[i], static_cast<llama_pos>(i), i == prompt_.size() - 1);
      const int32_t rc = llama_decode(context.ctx, batch.get());
      if (rc != 0) {
        context.ResyncAfterFailedDecode(prompt_.data() + pos, n);
        if (rc == 2) return false;
        throw std::runtime_error("cannot evaluate the prompt: " + DecodeError(rc));
      }
      context.RecordDecode(n, 1);
      context.cached.insert(context.cached.end(), prompt_.begin() + pos, prompt_.begin() + pos + n);
      context.SetCached(context.cached.size());
      pos += n;
    }
    return true;
  }

  void Generate(const ContextSession& session, Sampler& sampler) {
    ContextHandle& context = *context_;
    const llama_vocab* vocab = context.vocab();
    Batch batch(1);
    stopReason_ = "maxTokens";
    for (int64_t i = 0; maxTokens_ < 0 || i < maxTokens_; i++) {
      if (session.StopRequested()) {
        stopReason_ = "abort";
        return;
      }
      const llama_token token = sampler.Sample(context.ctx);
      generated_.push_back(token);
      if (!ignoreEos_ && llama_vocab_is_eog(vocab, token)) {
        stopReason_ = "eos";
        return;
      }
      Emit(filter_.Push(utf8_.Push(TokenPiece(vocab, token, sampler.RendersSpecial(token)))));
      if (filter_.stopped()) {
        stopReason_ = "stop";
        return;
      }
      if (maxTokens_ >= 0 && i + 1 >= maxTokens_) return;  // no need to decode a token nobody will follow
      // As llama-completion and llama-server: shift when the token to decode would take the last cell.
      if (contextShift_ && context.cached.size() + 1 >= context.contextSize) {
        const size_t keep = ShiftKeep(context.cached, keep_, vocab);
        discarded_ += ShiftSequence(context.memory(), 0, context.cached, keep);
        context.SetCached(context.cached.size());
      }
      const size_t pos = context.cached.size();
      if (pos >= context.contextSize) {
        stopReason_ = "contextFull";
        return;
      }
      batch.Clear();
      batch.Add(token, static_cast<llama_pos>(pos), true);
      const int32_t rc = llama_decode(context.ctx, batch.get());
      if (rc != 0) {
        context.ResyncAfterFailedDecode(&token, 1);
        if (rc == 2) {
          stopReason_ = "abort";
          return;
        }
        throw std::runtime_error("cannot continue the generation: " + DecodeError(rc));
      }
      context.RecordDecode(1, 1);
      context.cached.push_back(token);
      context.SetCached(context.cached.size());
    }
  }

  // Appends to the result and streams the piece to onText on the JS thread.
  void Emit(const std::string& piece) {
    if (piece.empty()) return;
    text_ += piece;
    if (onText_.IsEmpty()) return;
    Post([this, piece](Napi::Env env) {
      try {
        onText_.Call({Napi::String::New(env, piece)});
      } catch (const Napi::Error& e) {
        // The callback's exception rejects the generation, which stops at its next check.
        FailWith(e.Value());
        stop_.cancel.store(true);
      }
    });
  }

  ContextPtr context_;
  std::vector<llama_token> prompt_;
  int32_t maxTokens_ = -1;
  SamplingOptions sampling_;
  std::vector<std::string> stops_;
  bool ignoreEos_ = false;
  bool contextShift_ = false;
  size_t keep_ = 0;
  size_t cacheReuse_ = 0;
  Napi::FunctionReference onText_;
  MediaPromptPtr media_;

  Utf8Buffer utf8_;
  StopStringFilter filter_{{}};
  std::string text_;
  std::vector<llama_token> generated_;
  std::string stopReason_ = "maxTokens";
  size_t cachedTokens_ = 0;
  size_t discarded_ = 0;
  uint64_t resamples_ = 0;
  double promptMs_ = 0;
  double generateMs_ = 0;
};

}  // namespace

Napi::Promise StartGenerate(Napi::Env env, const ContextPtr& context, const Napi::Object& params) {
  auto task = std::make_unique<GenerateTask>(context, params);
  return Task::Start(env, std::move(task));
}

}  // namespace llama_oci
