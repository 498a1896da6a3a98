// NativeContext.bench: llama-bench's two measurements on this context. pp: nPrompt random tokens decoded in
// n_batch chunks, then llama_synchronize; tg: nGen random tokens decoded one at a time, each synchronized. The KV
// cache is cleared before each, so the timings match llama-bench's for the same model, context and threads.
#include <algorithm>
#include <chrono>
#include <random>
#include <stdexcept>
#include <string>

#include "batch.h"
#include "context.h"
#include "task.h"

namespace llama_oci {

namespace {

using Clock = std::chrono::steady_clock;

class BenchTask : public Task {
 public:
  BenchTask(ContextPtr context, int32_t nPrompt, int32_t nGen, AbortFlag abort)
      : context_(std::move(context)), nPrompt_(nPrompt), nGen_(nGen) {
    stop_.user = std::move(abort);
  }

 protected:
  void Run() override {
    ContextSession session(context_, stop_);
    ContextHandle& context = *context_;
    if (nPrompt_ < 0 || nGen_ < 0) throw std::runtime_error("bench: nPrompt and nGen must not be negative");
    CheckCanDecode(context, "benchmark");
    const int32_t needed = std::max(nPrompt_, nGen_);
    if (static_cast<uint32_t>(needed) > context.sequenceSize) {
      throw std::runtime_error("bench needs a context of at least " + std::to_string(needed) +
                               " tokens, this one has " + std::to_string(context.sequenceSize));
    }
    const llama_vocab* vocab = context.vocab();
    const int32_t vocabSize = llama_vocab_n_tokens(vocab);
    const bool addBos = llama_vocab_get_add_bos(vocab);
    std::mt19937 random(1234);
    std::uniform_int_distribution<int32_t> anyToken(0, vocabSize - 1);

    if (nPrompt_ > 0) {
      context.ClearMemory();
      const int32_t batchSize = static_cast<int32_t>(context.batchSize);
      Batch batch(batchSize);
      const auto start = Clock::now();
      for (int32_t pos = 0; pos < nPrompt_;) {
        Check(session);
        const int32_t n = std::min(batchSize, nPrompt_ - pos);
        batch.Clear();
        for (int32_t i = 0; i < n; i++) {
          const llama_token token = pos + i == 0 && addBos ? llama_vocab_bos(vocab) : anyToken(random);
          batch.Add(token, pos + i, i == n - 1);
        }
        Decode(context, batch);
        pos += n;
      }
      llama_synchronize(context.ctx);
      promptMs_ = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    }

    if (nGen_ > 0) {
      context.ClearMemory();
      Batch batch(1);
      llama_token token = addBos ? llama_vocab_bos(vocab) : anyToken(random);
      const auto start = Clock::now();
      for (int32_t pos = 0; pos < nGen_; pos++) {
        Check(session);
        batch.Clear();
        batch.Add(token, pos, true);
        Decode(context, batch);
        llama_synchronize(context.ctx);
        token = anyToken(random);
      }
      generateMs_ = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    }
    context.ClearMemory();
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("promptMs", Napi::Number::New(env, promptMs_));
    result.Set("generateMs", Napi::Number::New(env, generateMs_));
    return result;
  }

 private:
  void Check(const ContextSession& session) {
    if (session.StopRequested()) {
      context_->ClearMemory();
      throw std::runtime_error("bench aborted");
    }
  }

  void Decode(ContextHandle& context, const Batch& batch) {
    const int32_t rc = llama_decode(context.ctx, batch.get());
    if (rc == 0) return;
    context.ClearMemory();
    throw std::runtime_error(rc == 2 ? std::string("bench aborted") : "bench: " + DecodeError(rc));
  }

  ContextPtr context_;
  int32_t nPrompt_;
  int32_t nGen_;
  double promptMs_ = 0;
  double generateMs_ = 0;
};

}  // namespace

Napi::Promise StartBench(Napi::Env env, const ContextPtr& context, int32_t nPrompt, int32_t nGen, AbortFlag abort) {
  return Task::Start(env, std::make_unique<BenchTask>(context, nPrompt, nGen, std::move(abort)));
}

}  // namespace llama_oci
