// NativeContext.saveSequence / restoreSequence: the KV cache of one sequence as llama_state_seq_get_data gives it
// (the cells' positions and their K/V rows), and the tokens those cells hold, so that a conversation saved to a file
// continues later without evaluating its prompt again. Both run on a worker thread holding the context.
#include <stdexcept>
#include <string>
#include <vector>

#include "context.h"
#include "js-args.h"
#include "log.h"
#include "sequence-engine.h"
#include "task.h"

namespace llama_oci {

namespace {

size_t CommonPrefixLength(const std::vector<llama_token>& a, const std::vector<llama_token>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}

void CheckGenerationContext(const ContextHandle& context, const char* what) {
  if (context.embeddings) throw std::runtime_error(std::string("cannot ") + what + " of an embeddings context");
  CheckCanDecode(context, what);
}

class SaveSequenceTask : public Task {
 public:
  SaveSequenceTask(ContextPtr context, std::vector<llama_token> tokens)
      : context_(std::move(context)), tokens_(std::move(tokens)) {}

 protected:
  void Run() override {
    ContextSession session(context_, stop_);
    ContextHandle& context = *context_;
    CheckGenerationContext(context, "save a sequence");
    llama_seq_id id = 0;
    std::vector<llama_token> cached;
    if (context.engine) {
      if (!context.engine->FindSequence(tokens_, &id, &cached)) return;
    } else {
      // Only what these tokens share with the cache is saved: the rest belongs to some other request.
      context.TruncateMemory(CommonPrefixLength(context.cached, tokens_));
      cached = context.cached;
    }
    // Nothing of these tokens is cached (another request took the sequence): there is no state worth saving.
    if (cached.empty()) return;
    const size_t size = llama_state_seq_get_size(context.ctx, id);
    state_.resize(size);
    const size_t written = llama_state_seq_get_data(context.ctx, state_.data(), size, id);
    if (written == 0) throw std::runtime_error("llama.cpp could not copy the sequence's state");
    state_.resize(written);
    cached_ = std::move(cached);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    auto* owned = new std::vector<uint8_t>(std::move(state_));
    result.Set("state", Napi::Buffer<uint8_t>::NewOrCopy(env, owned->data(), owned->size(),
                                                         [owned](Napi::Env, uint8_t*) { delete owned; }));
    result.Set("tokens", TokensToJs(env, cached_));
    return result;
  }

 private:
  ContextPtr context_;
  std::vector<llama_token> tokens_;
  std::vector<uint8_t> state_;
  std::vector<llama_token> cached_;
};

class RestoreSequenceTask : public Task {
 public:
  RestoreSequenceTask(ContextPtr context, std::vector<uint8_t> state, std::vector<llama_token> tokens)
      : context_(std::move(context)), state_(std::move(state)), tokens_(std::move(tokens)) {}

 protected:
  void Run() override {
    ContextSession session(context_, stop_);
    ContextHandle& context = *context_;
    CheckGenerationContext(context, "restore a sequence");
    CheckTokens(context.vocab(), tokens_);
    if (tokens_.empty() || state_.empty()) throw std::runtime_error("there is no saved state to restore");
    if (tokens_.size() > context.sequenceSize) {
      throw std::runtime_error("the saved state holds " + std::to_string(tokens_.size()) +
                               " tokens but a sequence of the context holds " + std::to_string(context.sequenceSize));
    }
    llama_seq_id id = 0;
    if (context.engine) {
      id = context.engine->ClaimSequence(tokens_.size());
    } else {
      context.ClearMemory();
    }
    LogCapture capture;
    const size_t read = llama_state_seq_set_data(context.ctx, state_.data(), state_.size(), id);
    const llama_pos first = llama_memory_seq_pos_min(context.memory(), id);
    const llama_pos last = llama_memory_seq_pos_max(context.memory(), id);
    const bool consistent = read == state_.size() && first == 0 && last + 1 == static_cast<llama_pos>(tokens_.size());
    if (!consistent) {
      llama_memory_seq_rm(context.memory(), id, -1, -1);
      if (!context.engine) context.ClearMemory();
      const std::string reason = capture.FirstError();
      if (read == 0) {
        throw std::runtime_error(
            "cannot restore the saved state into this context" +
            (reason.empty() ? std::string(" (it was saved from a different kind of context)") : ": " + reason));
      }
      throw std::runtime_error("the saved state does not match its token record (" + std::to_string(tokens_.size()) +
                               " tokens, cells at positions " + std::to_string(first) + ".." + std::to_string(last) +
                               ")");
    }
    if (context.engine) {
      context.engine->Restored(id, tokens_);
    } else {
      context.cached = tokens_;
      context.SetCached(tokens_.size());
    }
  }

  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(tokens_.size())); }

 private:
  ContextPtr context_;
  std::vector<uint8_t> state_;
  std::vector<llama_token> tokens_;
};

}  // namespace

Napi::Promise StartSaveSequence(Napi::Env env, const ContextPtr& context, std::vector<llama_token> tokens) {
  return Task::Start(env, std::make_unique<SaveSequenceTask>(context, std::move(tokens)));
}

Napi::Promise StartRestoreSequence(Napi::Env env, const ContextPtr& context, std::vector<uint8_t> state,
                                   std::vector<llama_token> tokens) {
  return Task::Start(env, std::make_unique<RestoreSequenceTask>(context, std::move(state), std::move(tokens)));
}

}  // namespace llama_oci
