// NativeContext: owns one llama_context and the record of which tokens its KV cache holds (sequence 0). Workers
// lock the context's mutex for their whole run, so calls on one context never race; the handle keeps its model alive.
// A context with parallel > 1 sequences generates through its SequenceEngine instead (sequence-engine.h): one
// persistent thread that batches every running request into each llama_decode, locking the mutex step by step.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "abort.h"
#include "addon.h"
#include "ggml-cpu.h"
#include "model.h"

namespace llama_oci {

class SequenceEngine;

// Counters of llama_decode calls made for generation, readable from any thread (NativeContext.stats()).
struct DecodeStats {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> tokens{0};
  std::atomic<uint32_t> maxSequences{0};  // the most sequences one llama_decode call carried
};

struct ContextHandle {
  ModelPtr model;
  llama_context* ctx = nullptr;
  // The CPU threads of this context's decodes (as llama.cpp's tools attach them), one pool for generation and one
  // for batches when their thread counts differ; freed after the context.
  ggml_threadpool* threadpool = nullptr;
  ggml_threadpool* threadpoolBatch = nullptr;
  bool embeddings = false;
  uint32_t contextSize = 0;
  // The cells one sequence can hold: contextSize, or its share of them when each sequence of a parallel context has
  // its own (kvUnified false: llama.cpp's n_ctx_seq, contextSize / parallel rounded up to 256).
  uint32_t sequenceSize = 0;
  uint32_t batchSize = 0;
  uint32_t ubatchSize = 0;
  // False for models llama.cpp runs without a KV cache (BERT-like encoders): llama_decode then encodes instead.
  bool hasMemory = true;
  // Sequences (llama_context_params.n_seq_max).
  uint32_t parallel = 1;
  // The batched generation loop of a context with parallel > 1 (null otherwise).
  std::unique_ptr<SequenceEngine> engine;

  std::mutex mutex;                    // held by a worker for its whole run
  std::vector<llama_token> cached;     // tokens in the KV cache at positions 0..n-1 (guarded by mutex)
  std::atomic<size_t> cachedCount{0};  // cached.size(), readable without the mutex
  std::atomic<bool> clearRequested{false};
  std::atomic<bool> disposed{false};
  std::atomic<const StopFlags*> activeStop{nullptr};          // the running worker's flags, read by the abort callback
  std::atomic<const DecodeAbortCheck*> activeCheck{nullptr};  // the sequence engine's, during its decodes
  uint64_t memoryEpoch = 0;  // counts ClearMemory() calls, so the sequence engine notices them (guarded by mutex)
  DecodeStats stats;

  ContextHandle(ModelPtr model, llama_context* ctx, bool embeddings, uint32_t parallel);
  ~ContextHandle();
  // Creates and attaches the context's thread pools (CreateContext, before any decode).
  void AttachThreadpools(int32_t threads, int32_t threadsBatch);
  ContextHandle(const ContextHandle&) = delete;
  ContextHandle& operator=(const ContextHandle&) = delete;

  llama_memory_t memory() const { return llama_get_memory(ctx); }
  const llama_vocab* vocab() const { return model->vocab(); }

  // Forgets everything in the KV cache (caller holds the mutex).
  void ClearMemory();
  // Keeps only positions [0, n) of the cache (caller holds the mutex); clears everything if the memory cannot
  // drop a partial sequence (recurrent models). Returns how many tokens stay cached.
  size_t TruncateMemory(size_t n);
  // After llama_decode failed or was aborted on `pending` (the tokens following the cached ones): records the part
  // of `pending` the memory reports as decoded (whole ubatches stay in the cache) and drops anything past it.
  void ResyncAfterFailedDecode(const llama_token* pending, size_t count);
  void SetCached(size_t n) {
    cached.resize(n);
    cachedCount.store(n);
  }
  void RecordDecode(size_t tokens, uint32_t sequences) {
    stats.calls.fetch_add(1, std::memory_order_relaxed);
    stats.tokens.fetch_add(tokens, std::memory_order_relaxed);
    uint32_t seen = stats.maxSequences.load(std::memory_order_relaxed);
    while (sequences > seen && !stats.maxSequences.compare_exchange_weak(seen, sequences)) {
    }
  }
};

using ContextPtr = std::shared_ptr<ContextHandle>;

// A worker's exclusive use of a context: locks it, applies a pending clear(), and exposes the worker's stop flags
// to llama.cpp's abort callback for the duration.
class ContextSession {
 public:
  ContextSession(const ContextPtr& context, const StopFlags& stop);
  ~ContextSession();
  ContextSession(const ContextSession&) = delete;
  ContextSession& operator=(const ContextSession&) = delete;

  bool StopRequested() const { return context_->disposed.load() || stop_.Requested(); }

 private:
  ContextPtr context_;
  const StopFlags& stop_;
  std::unique_lock<std::mutex> lock_;
};

class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env, ContextPtr handle);

  explicit ContextWrap(const Napi::CallbackInfo& info);
  ~ContextWrap() override;

  // Drops this object's share of the context (idempotent). With stopWorker (dispose(), environment teardown) a
  // worker running on it stops at its next check; when the object is merely garbage-collected it finishes its work.
  // waitForEngine (environment teardown) blocks until the context's sequence engine thread, if any, has ended.
  void Release(bool stopWorker, bool waitForEngine = false);

 private:
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Embed(const Napi::CallbackInfo& info);
  Napi::Value Bench(const Napi::CallbackInfo& info);
  Napi::Value SaveSequence(const Napi::CallbackInfo& info);
  Napi::Value RestoreSequence(const Napi::CallbackInfo& info);
  Napi::Value CachedTokenCount(const Napi::CallbackInfo& info);
  void Clear(const Napi::CallbackInfo& info);
  void Expect(const Napi::CallbackInfo& info);
  Napi::Value ContextSize(const Napi::CallbackInfo& info);
  Napi::Value SequenceSize(const Napi::CallbackInfo& info);
  Napi::Value BatchSize(const Napi::CallbackInfo& info);
  Napi::Value UbatchSize(const Napi::CallbackInfo& info);
  Napi::Value HasMemory(const Napi::CallbackInfo& info);
  Napi::Value Parallel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  ContextPtr handle_;
  std::shared_ptr<LiveObjects> live_;
  uint32_t contextSize_ = 0;
  uint32_t sequenceSize_ = 0;
  uint32_t batchSize_ = 0;
  uint32_t ubatchSize_ = 0;
  bool hasMemory_ = true;
  uint32_t parallel_ = 1;
};

// Loads of a context on a worker thread: NativeModel.createContext(options).
Napi::Promise CreateContext(Napi::Env env, const ModelPtr& model, const Napi::Object& options);

// Workers on a context (generate-worker.cpp, embed-worker.cpp, bench-worker.cpp).
Napi::Promise StartGenerate(Napi::Env env, const ContextPtr& context, const Napi::Object& params);
Napi::Promise StartEmbed(Napi::Env env, const ContextPtr& context, std::vector<llama_token> tokens, bool normalize,
                         AbortFlag abort);
Napi::Promise StartBench(Napi::Env env, const ContextPtr& context, int32_t nPrompt, int32_t nGen, AbortFlag abort);
Napi::Promise StartSaveSequence(Napi::Env env, const ContextPtr& context, std::vector<llama_token> tokens);
Napi::Promise StartRestoreSequence(Napi::Env env, const ContextPtr& context, std::vector<uint8_t> state,
                                   std::vector<llama_token> tokens);

// Throws when a token is outside the vocabulary (llama_decode would assert on it).
void CheckTokens(const llama_vocab* vocab, const std::vector<llama_token>& tokens);

// Throws std::runtime_error when llama.cpp would abort (or misbehave) decoding token by token on this context: a
// model without a KV cache, with non-causal attention, an encoder, or no tokenizer. `what` names the operation.
void CheckCanDecode(const ContextHandle& context, const char* what);

}  // namespace llama_oci
