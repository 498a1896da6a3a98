#include "context.h"

#include <stdexcept>
#include <string>

#include "js-args.h"
#include "log.h"
#include "sequence-engine.h"
#include "task.h"

namespace llama_oci {

namespace {

// llama.cpp checks this between graph nodes during llama_decode; returning true makes llama_decode return 2.
bool AbortCallback(void* data) noexcept {
  auto* context = static_cast<ContextHandle*>(data);
  if (context->disposed.load(std::memory_order_relaxed) || ProcessExiting()) return true;
  const StopFlags* stop = context->activeStop.load(std::memory_order_acquire);
  if (stop != nullptr && stop->Requested()) return true;
  const DecodeAbortCheck* check = context->activeCheck.load(std::memory_order_acquire);
  return check != nullptr && check->DecodeAbortRequested();
}

}  // namespace

ContextHandle::ContextHandle(ModelPtr model, llama_context* ctx, bool embeddings, uint32_t parallel)
    : model(std::move(model)), ctx(ctx), embeddings(embeddings), parallel(parallel) {
  contextSize = llama_n_ctx(ctx);
  sequenceSize = std::min(contextSize, llama_n_ctx_seq(ctx));
  batchSize = llama_n_batch(ctx);
  ubatchSize = llama_n_ubatch(ctx);
  hasMemory = llama_get_memory(ctx) != nullptr;
  llama_set_abort_callback(ctx, AbortCallback, this);
  if (parallel > 1 && !embeddings) engine = std::make_unique<SequenceEngine>(*this);
}

ContextHandle::~ContextHandle() {
  engine.reset();
  llama_free(ctx);
  if (threadpoolBatch != nullptr) ggml_threadpool_free(threadpoolBatch);
  if (threadpool != nullptr) ggml_threadpool_free(threadpool);
}

void ContextHandle::AttachThreadpools(int32_t threads, int32_t threadsBatch) {
  ggml_threadpool_params generation = ggml_threadpool_params_default(threads);
  ggml_threadpool_params batch = ggml_threadpool_params_default(threadsBatch);
  if (!ggml_threadpool_params_match(&generation, &batch)) {
    threadpoolBatch = ggml_threadpool_new(&batch);
    generation.paused = true;  // woken by llama.cpp when a decode needs it (as common_threadpools does)
  }
  threadpool = ggml_threadpool_new(&generation);
  if (threadpool == nullptr) {
    // Without pools, ggml makes the threads of each decode itself: slower, not wrong.
    if (threadpoolBatch != nullptr) ggml_threadpool_free(threadpoolBatch);
    threadpoolBatch = nullptr;
    return;
  }
  llama_attach_threadpool(ctx, threadpool, threadpoolBatch);
}

void ContextHandle::ClearMemory() {
  llama_memory_clear(memory(), false);
  memoryEpoch++;
  SetCached(0);
}

size_t ContextHandle::TruncateMemory(size_t n) {
  if (n >= cached.size()) return cached.size();
  if (!llama_memory_seq_rm(memory(), 0, static_cast<llama_pos>(n), -1)) {
    ClearMemory();
    return 0;
  }
  SetCached(n);
  return n;
}

void ContextHandle::ResyncAfterFailedDecode(const llama_token* pending, size_t count) {
  const llama_pos last = llama_memory_seq_pos_max(memory(), 0);
  const size_t present = last < 0 ? 0 : static_cast<size_t>(last) + 1;
  const size_t keep = std::min(present, cached.size() + count);
  if (keep > cached.size()) {
    cached.insert(cached.end(), pending, pending + (keep - cached.size()));
  }
  SetCached(keep);
  if (!llama_memory_seq_rm(memory(), 0, static_cast<llama_pos>(keep), -1)) ClearMemory();
}

ContextSession::ContextSession(const ContextPtr& context, const StopFlags& stop)
    : context_(context), stop_(stop), lock_(context->mutex) {
  if (context_->clearRequested.exchange(false)) context_->ClearMemory();
  context_->activeStop.store(&stop_, std::memory_order_release);
}

ContextSession::~ContextSession() { context_->activeStop.store(nullptr, std::memory_order_release); }

void CheckTokens(const llama_vocab* vocab, const std::vector<llama_token>& tokens) {
  const llama_token n = llama_vocab_n_tokens(vocab);
  for (size_t i = 0; i < tokens.size(); i++) {
    if (tokens[i] < 0 || tokens[i] >= n) {
      throw std::runtime_error("token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                               " is outside the vocabulary (0.." + std::to_string(n - 1) + ")");
    }
  }
}

void CheckCanDecode(const ContextHandle& context, const char* what) {
  const llama_model* model = context.model->model;
  const std::string cannot = std::string("cannot ") + what + " with this model: ";
  if (!context.hasMemory || !context.model->causal) {
    throw std::runtime_error(cannot + "it is an embedding model with non-causal attention" +
                             (context.hasMemory ? "" : " and no KV cache") + " (use embed())");
  }
  if (llama_model_has_encoder(model)) {
    throw std::runtime_error(cannot + (llama_model_has_decoder(model)
                                           ? "encoder-decoder models (such as T5) are not supported"
                                           : "it is an encoder-only model (use embed())"));
  }
  CheckDetokenizer(context.vocab());
}

// ---- NativeContext -------------------------------------------------------------------------------------------

Napi::Function ContextWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeContext",
                     {
                         InstanceMethod<&ContextWrap::Generate>("generate"),
                         InstanceMethod<&ContextWrap::Embed>("embed"),
                         InstanceMethod<&ContextWrap::Bench>("bench"),
                         InstanceMethod<&ContextWrap::SaveSequence>("saveSequence"),
                         InstanceMethod<&ContextWrap::RestoreSequence>("restoreSequence"),
                         InstanceMethod<&ContextWrap::CachedTokenCount>("cachedTokenCount"),
                         InstanceMethod<&ContextWrap::Clear>("clear"),
                         InstanceMethod<&ContextWrap::Expect>("expect"),
                         InstanceAccessor<&ContextWrap::ContextSize>("contextSize"),
                         InstanceAccessor<&ContextWrap::SequenceSize>("sequenceSize"),
                         InstanceAccessor<&ContextWrap::BatchSize>("batchSize"),
                         InstanceAccessor<&ContextWrap::UbatchSize>("ubatchSize"),
                         InstanceAccessor<&ContextWrap::HasMemory>("hasMemory"),
                         InstanceAccessor<&ContextWrap::Parallel>("parallel"),
                         InstanceMethod<&ContextWrap::Stats>("stats"),
                         InstanceMethod<&ContextWrap::Dispose>("dispose"),
                         InstanceAccessor<&ContextWrap::Disposed>("disposed"),
                     });
}

Napi::Object ContextWrap::New(Napi::Env env, ContextPtr handle) {
  return GetAddonData(env).contextClass.New({Napi::External<ContextPtr>::New(env, &handle)});
}

ContextWrap::ContextWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ContextWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeContext cannot be constructed directly: use model.createContext()");
  }
  handle_ = *info[0].As<Napi::External<ContextPtr>>().Data();
  contextSize_ = handle_->contextSize;
  sequenceSize_ = handle_->sequenceSize;
  batchSize_ = handle_->batchSize;
  ubatchSize_ = handle_->ubatchSize;
  hasMemory_ = handle_->hasMemory;
  parallel_ = handle_->parallel;
  live_ = GetAddonData(info.Env()).live;
  live_->contexts.insert(this);
}

ContextWrap::~ContextWrap() {
  live_->contexts.erase(this);
  Release(false);
}

void ContextWrap::Release(bool stopWorker, bool waitForEngine) {
  if (!handle_) return;
  // A worker still running keeps its own share and frees the context when it ends; so does the sequence engine's
  // thread, which (once told to stop) either aborts its requests or finishes them, then ends.
  if (stopWorker) handle_->disposed.store(true);
  SequenceEngine* engine = handle_->engine.get();
  std::shared_ptr<ExitLatch> exited = engine != nullptr ? engine->exitLatch() : nullptr;
  if (engine != nullptr) engine->Stop(stopWorker);
  handle_.reset();
  if (waitForEngine && exited) exited->Wait();
}

namespace {
const char* kDisposed = "context has been disposed";
}

Napi::Value ContextWrap::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    const Napi::Object params = ObjectArg(info, 0, "generate params");
    if (handle_->engine) return handle_->engine->Submit(env, handle_, params);
    return StartGenerate(env, handle_, params);
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value ContextWrap::Embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    auto tokens = TokensValue(info[0], "tokens");
    const bool normalize = BoolArg(info, 1, true);
    auto abort = AbortFlagWrap::From(info[2], "abort");
    return StartEmbed(env, handle_, std::move(tokens), normalize, std::move(abort));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value ContextWrap::Bench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
      throw Napi::TypeError::New(env, "bench(nPrompt, nGen, abort): nPrompt and nGen must be numbers");
    }
    const int32_t nPrompt = info[0].As<Napi::Number>().Int32Value();
    const int32_t nGen = info[1].As<Napi::Number>().Int32Value();
    auto abort = AbortFlagWrap::From(info[2], "abort");
    return StartBench(env, handle_, nPrompt, nGen, std::move(abort));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value ContextWrap::SaveSequence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    return StartSaveSequence(env, handle_, TokensValue(info[0], "tokens"));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value ContextWrap::RestoreSequence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) return Task::Rejected(env, kDisposed);
  try {
    if (info.Length() < 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw Napi::TypeError::New(env, "state must be a Uint8Array");
    }
    auto bytes = info[0].As<Napi::Uint8Array>();
    std::vector<uint8_t> state(bytes.Data(), bytes.Data() + bytes.ByteLength());
    return StartRestoreSequence(env, handle_, std::move(state), TokensValue(info[1], "tokens"));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value ContextWrap::CachedTokenCount(const Napi::CallbackInfo& info) {
  if (!handle_) throw Napi::Error::New(info.Env(), kDisposed);
  if (handle_->clearRequested.load()) return Napi::Number::New(info.Env(), 0);
  // With several sequences: the tokens of all of them (each holds its own cells of the unified cache).
  return Napi::Number::New(info.Env(), static_cast<double>(handle_->cachedCount.load()));
}

void ContextWrap::Clear(const Napi::CallbackInfo& info) {
  if (!handle_) throw Napi::Error::New(info.Env(), kDisposed);
  // Never wait for a running worker on the JS thread: if one holds the context, the next one clears first. The
  // sequence engine applies a pending clear at its next step to the sequences that are not generating (and to the
  // others when they end).
  {
    std::unique_lock<std::mutex> lock(handle_->mutex, std::try_to_lock);
    if (lock.owns_lock() && (!handle_->engine || handle_->engine->Idle())) {
      handle_->ClearMemory();
      return;
    }
  }
  handle_->clearRequested.store(true);
  if (handle_->engine) handle_->engine->Wake();
}

void ContextWrap::Expect(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber())
    throw Napi::TypeError::New(info.Env(), "expect: count must be a number");
  const double count = info[0].As<Napi::Number>().DoubleValue();
  if (!(count >= 0)) throw Napi::RangeError::New(info.Env(), "expect: count must be at least 0");
  if (handle_ && handle_->engine) handle_->engine->Expect(static_cast<size_t>(count));
}

Napi::Value ContextWrap::ContextSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), contextSize_);
}
Napi::Value ContextWrap::SequenceSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), sequenceSize_);
}
Napi::Value ContextWrap::BatchSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), batchSize_); }
Napi::Value ContextWrap::UbatchSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ubatchSize_);
}
Napi::Value ContextWrap::HasMemory(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), hasMemory_);
}
Napi::Value ContextWrap::Parallel(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), parallel_); }

Napi::Value ContextWrap::Stats(const Napi::CallbackInfo& info) {
  if (!handle_) throw Napi::Error::New(info.Env(), kDisposed);
  Napi::Env env = info.Env();
  const DecodeStats& stats = handle_->stats;
  Napi::Object out = Napi::Object::New(env);
  out.Set("decodeCalls", Napi::Number::New(env, static_cast<double>(stats.calls.load())));
  out.Set("decodedTokens", Napi::Number::New(env, static_cast<double>(stats.tokens.load())));
  out.Set("maxSequencesPerDecode", Napi::Number::New(env, stats.maxSequences.load()));
  const SequenceEngine* engine = handle_->engine.get();
  out.Set("activeSequences", Napi::Number::New(env, engine != nullptr ? static_cast<double>(engine->Active()) : 0));
  out.Set("pendingRequests", Napi::Number::New(env, engine != nullptr ? static_cast<double>(engine->Pending()) : 0));
  return out;
}

void ContextWrap::Dispose(const Napi::CallbackInfo&) { Release(true); }

Napi::Value ContextWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !handle_); }

// ---- createContext -------------------------------------------------------------------------------------------

namespace {

enum llama_flash_attn_type FlashAttention(Napi::Env env, const std::string& value) {
  if (value == "auto") return LLAMA_FLASH_ATTN_TYPE_AUTO;
  if (value == "on") return LLAMA_FLASH_ATTN_TYPE_ENABLED;
  if (value == "off") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
  throw Napi::TypeError::New(env, "flashAttention must be \"auto\", \"on\" or \"off\"");
}

enum llama_pooling_type Pooling(Napi::Env env, const std::string& value) {
  if (value == "unspecified") return LLAMA_POOLING_TYPE_UNSPECIFIED;
  if (value == "none") return LLAMA_POOLING_TYPE_NONE;
  if (value == "mean") return LLAMA_POOLING_TYPE_MEAN;
  if (value == "cls") return LLAMA_POOLING_TYPE_CLS;
  if (value == "last") return LLAMA_POOLING_TYPE_LAST;
  if (value == "rank") return LLAMA_POOLING_TYPE_RANK;
  throw Napi::TypeError::New(env, "pooling must be \"unspecified\", \"none\", \"mean\", \"cls\", \"last\" or \"rank\"");
}

// LLAMA_MAX_SEQ of llama.cpp (src/llama-cparams.h), which llama.h does not export.
constexpr int32_t kMaxSequences = 256;

uint32_t NonNegative(Napi::Env env, const Napi::Object& options, const char* key) {
  const int32_t value = IntField(options, key, 0);
  if (value < 0) throw Napi::RangeError::New(env, std::string(key) + " must not be negative");
  return static_cast<uint32_t>(value);
}

class CreateContextTask : public Task {
 public:
  CreateContextTask(ModelPtr model, llama_context_params params) : model_(std::move(model)), params_(params) {}

 protected:
  void Run() override {
    LogCapture capture;
    llama_context* ctx = llama_init_from_model(model_->model, params_);
    if (ctx == nullptr) {
      const std::string reason = capture.FirstError();
      throw std::runtime_error("cannot create a context of " + std::to_string(params_.n_ctx) + " tokens" +
                               (reason.empty() ? std::string(" (out of memory?)") : ": " + reason));
    }
    context_ = std::make_shared<ContextHandle>(model_, ctx, params_.embeddings, params_.n_seq_max);
    context_->AttachThreadpools(static_cast<int32_t>(params_.n_threads), static_cast<int32_t>(params_.n_threads_batch));
  }

  Napi::Value Result(Napi::Env env) override { return ContextWrap::New(env, std::move(context_)); }

 private:
  ModelPtr model_;
  llama_context_params params_;
  ContextPtr context_;
};

}  // namespace

Napi::Promise CreateContext(Napi::Env env, const ModelPtr& model, const Napi::Object& options) {
  if (model->vocabOnly)
    throw Napi::Error::New(env, "cannot create a context: the model was loaded with vocabOnly (no weights)");
  llama_context_params params = llama_context_default_params();
  params.n_ctx = NonNegative(env, options, "contextSize");
  const uint32_t batch = NonNegative(env, options, "batchSize");
  const uint32_t ubatch = NonNegative(env, options, "ubatchSize");
  if (batch > 0) params.n_batch = batch;
  params.n_ubatch = std::min(ubatch > 0 ? ubatch : params.n_ubatch, params.n_batch);
  // parallel > 1: that many sequences, either in one unified KV cache of n_ctx cells, which they share (kvUnified),
  // or each in its own n_ctx / parallel cells, as llama-server's default: attention then reads only the sequence's
  // own cells, which makes a step with many sequences faster.
  const int32_t parallel = IntField(options, "parallel", 1);
  if (parallel < 1 || parallel > kMaxSequences) {
    throw Napi::RangeError::New(env, "parallel must be an integer from 1 to " + std::to_string(kMaxSequences));
  }
  params.n_seq_max = static_cast<uint32_t>(parallel);
  params.kv_unified = parallel > 1 && BoolField(options, "kvUnified", true);
  // ggml's CPU backend has room for GGML_MAX_N_THREADS; more would write past its per-thread arrays.
  const int32_t threads = static_cast<int32_t>(NonNegative(env, options, "threads"));
  const int32_t threadsBatch = static_cast<int32_t>(NonNegative(env, options, "threadsBatch"));
  if (threads > GGML_MAX_N_THREADS || threadsBatch > GGML_MAX_N_THREADS) {
    throw Napi::RangeError::New(env, "threads and threadsBatch must be at most " + std::to_string(GGML_MAX_N_THREADS));
  }
  if (threads > 0) params.n_threads = threads;
  params.n_threads_batch = threadsBatch > 0 ? threadsBatch : (threads > 0 ? threads : params.n_threads_batch);
  params.flash_attn_type = FlashAttention(env, StringField(options, "flashAttention", "auto"));
  params.embeddings = BoolField(options, "embeddings", false);
  if (parallel > 1 && params.embeddings) {
    throw Napi::RangeError::New(env,
                                "parallel sequences are for generation: create embedding contexts with parallel 1");
  }
  if (static_cast<uint32_t>(parallel) > params.n_batch) {
    throw Napi::RangeError::New(env, "batchSize (" + std::to_string(params.n_batch) + ") must be at least parallel (" +
                                         std::to_string(parallel) + "): each step decodes a token of every sequence");
  }
  params.pooling_type = Pooling(env, StringField(options, "pooling", "unspecified"));
  params.no_perf = true;
  return Task::Start(env, std::make_unique<CreateContextTask>(model, params));
}

}  // namespace llama_oci
