#include "sequence-engine.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

#include "batch.h"
#include "context.h"
#include "generate-params.h"
#include "sampling.h"
#include "stop-strings.h"
#include "task.h"
#include "utf8.h"

namespace llama_oci {

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

size_t CommonPrefix(const std::vector<llama_token>& a, const std::vector<llama_token>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}

// The JS-thread half of a request: its promise, its onText callback and the error that callback threw.
struct JsSide {
  explicit JsSide(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  Napi::FunctionReference onText;
  Napi::Reference<Napi::Value> callbackError;
  std::shared_ptr<std::atomic<bool>> cancel;
};

using JsCall = std::function<void(Napi::Env, JsSide&)>;

// A request's thread-safe function: text pieces and the settlement travel through it, in order. The engine thread
// posts and finally closes it; Node finalizes it on the JS thread (after the request ended, or at environment
// teardown), and from then on Post returns false instead of touching freed memory.
class Channel {
 public:
  static std::shared_ptr<Channel> Create(Napi::Env env, std::unique_ptr<JsSide> js) {
    auto channel = std::make_shared<Channel>();
    auto* holder = new std::shared_ptr<Channel>(channel);
    JsSide* raw = js.release();
    channel->js_ = raw;
    napi_value name = Napi::String::New(env, "llama-oci-sequence");
    const napi_status status = napi_create_threadsafe_function(
        env, nullptr, nullptr, name, 0, 1, holder, &Channel::Finalize, raw, &Channel::CallJs, &channel->tsfn_);
    if (status != napi_ok) {
      channel->js_ = nullptr;
      delete raw;
      delete holder;
      throw Napi::Error::New(env, "cannot create a thread-safe function for a request");
    }
    return channel;
  }

  // Any thread. False once the channel is closed or the environment is going away.
  bool Post(JsCall call) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return false;
    auto* boxed = new JsCall(std::move(call));
    if (napi_call_threadsafe_function(tsfn_, boxed, napi_tsfn_nonblocking) != napi_ok) {
      delete boxed;
      closed_ = true;  // closing: the function must not be used again, not even released
      return false;
    }
    return true;
  }

  // After the last Post: lets Node finalize the function once the queued calls ran.
  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
  }

 private:
  static void CallJs(napi_env env, napi_value, void* context, void* data) {
    std::unique_ptr<JsCall> call(static_cast<JsCall*>(data));
    if (env == nullptr || context == nullptr || call == nullptr) return;  // teardown: drop the message
    // Called by Node outside node-addon-api's wrappers: nothing may escape.
    try {
      Napi::HandleScope scope(env);
      (*call)(Napi::Env(env), *static_cast<JsSide*>(context));
    } catch (...) {
    }
  }

  static void Finalize(napi_env, void* data, void*) {
    auto* holder = static_cast<std::shared_ptr<Channel>*>(data);
    Channel& channel = **holder;
    JsSide* js = nullptr;
    {
      std::lock_guard<std::mutex> lock(channel.mutex_);
      channel.closed_ = true;
      channel.tsfn_ = nullptr;
      js = channel.js_;
      channel.js_ = nullptr;
    }
    delete js;
    delete holder;
  }

  std::mutex mutex_;
  napi_threadsafe_function tsfn_ = nullptr;
  bool closed_ = false;
  JsSide* js_ = nullptr;  // owned; freed by Finalize on the JS thread
};

// What a finished request resolves (or rejects) with.
struct Outcome {
  bool failed = false;
  std::string error;
  std::string text;
  std::vector<llama_token> tokens;
  std::string stopReason;
  size_t promptTokens = 0;
  size_t cachedTokens = 0;
  size_t discardedTokens = 0;
  uint64_t grammarResamples = 0;
  double promptMs = 0;
  double generateMs = 0;
};

void Settle(Napi::Env env, JsSide& js, const Outcome& outcome) {
  if (!js.callbackError.IsEmpty()) {
    js.deferred.Reject(js.callbackError.Value());
    return;
  }
  if (outcome.failed) {
    js.deferred.Reject(
        Napi::Error::New(env, outcome.error.empty() ? "unexpected native error" : outcome.error).Value());
    return;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("text", Napi::String::New(env, outcome.text));
  auto tokens = Napi::Int32Array::New(env, outcome.tokens.size());
  std::copy(outcome.tokens.begin(), outcome.tokens.end(), tokens.Data());
  result.Set("tokens", tokens);
  result.Set("stopReason", Napi::String::New(env, outcome.stopReason));
  result.Set("promptTokens", Napi::Number::New(env, static_cast<double>(outcome.promptTokens)));
  result.Set("cachedTokens", Napi::Number::New(env, static_cast<double>(outcome.cachedTokens)));
  result.Set("generatedTokens", Napi::Number::New(env, static_cast<double>(outcome.tokens.size())));
  result.Set("promptMs", Napi::Number::New(env, outcome.promptMs));
  result.Set("generateMs", Napi::Number::New(env, outcome.generateMs));
  result.Set("discardedTokens", Napi::Number::New(env, static_cast<double>(outcome.discardedTokens)));
  result.Set("grammarResamples", Napi::Number::New(env, static_cast<double>(outcome.grammarResamples)));
  js.deferred.Resolve(result);
}

// The request's last message: its settlement, then the channel closes.
void SettleAndClose(Channel& channel, Outcome outcome) {
  channel.Post([outcome = std::move(outcome)](Napi::Env env, JsSide& js) { Settle(env, js, outcome); });
  channel.Close();
}

}  // namespace

// One request, from Submit to its settlement (owned by the queue, then by the running list).
struct EngineJob {
  std::vector<llama_token> prompt;
  int32_t maxTokens = -1;
  SamplingOptions sampling;
  bool ignoreEos = false;
  bool contextShift = false;
  size_t keep = 0;
  size_t cacheReuse = 0;
  AbortFlag abort;
  std::shared_ptr<std::atomic<bool>> cancel;  // set when onText threw (or JS went away)
  std::shared_ptr<Channel> channel;
  bool streams = false;
  MediaPromptPtr media;  // the prompt's images, if any (vision.h)
  Clock::time_point queuedAt = Clock::now();

  EngineSlot* slot = nullptr;
  std::unique_ptr<Sampler> sampler;
  size_t next = 0;          // prompt tokens in the sequence's cells (the reused prefix included)
  bool generating = false;  // the whole prompt is evaluated
  bool hasPending = false;  // `pending` was sampled and is decoded at the next step
  llama_token pending = 0;
  bool finished = false;

  Utf8Buffer utf8;
  StopStringFilter filter{{}};
  std::string text;
  std::vector<llama_token> generated;
  size_t cachedTokens = 0;
  size_t discardedTokens = 0;  // by context shifts
  Clock::time_point promptStart = Clock::now();
  Clock::time_point generateStart;
  double promptMs = 0;

  // Prompt positions from `next` to the next image (or the end).
  size_t TextLeft() const { return media ? media->TextRun(next) : prompt.size() - next; }

  bool StopRequested() const {
    return cancel->load(std::memory_order_relaxed) || (abort && abort->load(std::memory_order_relaxed)) ||
           ProcessExiting();
  }
};

SequenceEngine::SequenceEngine(ContextHandle& context) : context_(context), sequences_(context.parallel) {
  slots_.resize(sequences_);
  for (size_t i = 0; i < sequences_; i++) slots_[i].id = static_cast<llama_seq_id>(i);
}

SequenceEngine::~SequenceEngine() {
  if (!thread_.joinable()) return;
  // The thread holds the context, so the engine dies with it only once the thread let go: on the thread itself (it
  // returns right after) or on the thread that dropped the last share after it (then it is about to end).
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

Napi::Promise SequenceEngine::Submit(Napi::Env env, const ContextPtr& self, const Napi::Object& params) {
  GenerateParams parsed = ReadGenerateParams(params);
  ContextHandle& context = context_;
  // The same checks, in the same words, as the per-request worker (generate-worker.cpp).
  if (context.embeddings)
    throw std::runtime_error("this context was created for embeddings: create one without embeddings to generate");
  CheckCanDecode(context, "generate text");
  if (parsed.prompt.empty()) throw std::runtime_error("cannot generate from an empty prompt (pass at least one token)");
  CheckPromptTokens(context.vocab(), parsed.prompt, parsed.media.get());
  if (parsed.media && parsed.media->model() != context.model)
    throw std::runtime_error("this prompt's media were tokenized for another model");
  if (parsed.prompt.size() > context.sequenceSize) {
    throw std::runtime_error("prompt of " + std::to_string(parsed.prompt.size()) +
                             " tokens does not fit the context of " + std::to_string(context.sequenceSize) + " tokens" +
                             (context.sequenceSize < context.contextSize ? " (one sequence's share)" : ""));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) return Task::Rejected(env, "context has been disposed");
  }

  auto job = std::make_unique<EngineJob>();
  job->prompt = std::move(parsed.prompt);
  job->maxTokens = parsed.maxTokens;
  job->sampling = std::move(parsed.sampling);
  job->filter = StopStringFilter(std::move(parsed.stops));
  job->ignoreEos = parsed.ignoreEos;
  job->contextShift = parsed.contextShift;
  job->keep = parsed.keep;
  job->cacheReuse = parsed.cacheReuse;
  job->media = std::move(parsed.media);
  job->abort = std::move(parsed.abort);
  job->cancel = std::make_shared<std::atomic<bool>>(false);
  auto js = std::make_unique<JsSide>(env);
  js->cancel = job->cancel;
  if (!parsed.onText.IsEmpty()) {
    js->onText = Napi::Persistent(parsed.onText);
    job->streams = true;
  }
  Napi::Promise promise = js->deferred.Promise();
  job->channel = Channel::Create(env, std::move(js));

  std::string failure;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!thread_.joinable()) {
      try {
        exited_->Started();
        thread_ = std::thread(&SequenceEngine::Main, this, self);
      } catch (...) {
        exited_->Open();
        failure = "cannot start the sequence thread: " + Task::CurrentExceptionMessage();
      }
    }
    if (failure.empty()) {
      queue_.push_back(std::move(job));
      pending_.store(queue_.size());
    }
  }
  if (!failure.empty()) {
    Outcome outcome;
    outcome.failed = true;
    outcome.error = failure;
    SettleAndClose(*job->channel, std::move(outcome));
    return promise;
  }
  wake_.notify_one();
  return promise;
}

void SequenceEngine::Stop(bool abortRunning) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    if (abortRunning) abortAll_ = true;
  }
  wake_.notify_all();
}

void SequenceEngine::Expect(size_t count) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    expected_ = count;
  }
  wake_.notify_all();
}

void SequenceEngine::Wake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    woken_ = true;
  }
  wake_.notify_all();
}

bool SequenceEngine::DecodeAbortRequested() const {
  if (decoding_.empty()) return false;
  for (const EngineJob* job : decoding_) {
    if (!job->StopRequested()) return false;
  }
  return true;
}

void SequenceEngine::Main(ContextPtr self) {
  NameThisThread("llama-oci-seq");
  std::shared_ptr<ExitLatch> exited = exited_;
  try {
    Loop();
  } catch (...) {
    // Loop handles its own failures; nothing may escape a thread's function.
  }
  self.reset();  // may free the context, and this engine with it: touch nothing of it from here on
  exited->Open();
}

void SequenceEngine::Loop() {
  std::vector<std::unique_ptr<EngineJob>> admitted;
  for (;;) {
    bool abortAll = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] {
        return stop_ || woken_ || !running_.empty() || (!queue_.empty() && running_.size() < sequences_);
      });
      woken_ = false;
      if (running_.empty() && !queue_.empty() && expected_ > 0 && !stop_) {
        // Idle, and more requests are on their way: they share this first step (see Expect).
        wake_.wait_until(lock, queue_.front()->queuedAt + kGatherWindow,
                         [this] { return stop_ || expected_ == 0 || queue_.size() >= sequences_; });
      }
      abortAll = abortAll_;
      if (stop_ && queue_.empty() && running_.empty()) return;
      size_t room = abortAll ? queue_.size() : sequences_ - running_.size();
      while (room > 0 && !queue_.empty()) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
        room--;
      }
      pending_.store(queue_.size());
    }
    BusyScope busy;  // exit() waits for the step (abort.h)
    try {
      Step(admitted, abortAll);
    } catch (...) {
      Recover(admitted, Task::CurrentExceptionMessage());
    }
    admitted.clear();
  }
}

void SequenceEngine::Recover(std::vector<std::unique_ptr<EngineJob>>& admitted, const std::string& message) {
  try {
    std::unique_lock<std::mutex> lock(context_.mutex);
    context_.activeCheck.store(nullptr);
    decoding_.clear();
    for (auto& job : admitted) {
      if (job) Fail(*job, message);
    }
    for (auto& job : running_) Fail(*job, message);
    Reap();
    // What the cells hold is unknown after a failure in the middle of a step.
    for (EngineSlot& slot : slots_) Evict(slot);
    context_.cachedCount.store(0);
  } catch (...) {
    running_.clear();
    active_.store(0);
  }
}

void SequenceEngine::Step(std::vector<std::unique_ptr<EngineJob>>& admitted, bool abortAll) {
  std::unique_lock<std::mutex> lock(context_.mutex);
  if (abortAll || context_.disposed.load() || ProcessExiting()) {
    for (auto& job : admitted) Finish(*job, "abort");
    admitted.clear();
    for (auto& job : running_) Finish(*job, "abort");
    Reap();
    return;
  }
  SyncWithMemory();
  ApplyClear();
  for (auto& job : admitted) Admit(std::move(job));
  admitted.clear();
  for (auto& job : running_) {
    if (job->StopRequested()) Finish(*job, "abort");
  }
  Reap();
  if (!running_.empty()) DecodeStep();
  context_.cachedCount.store(CachedTotal());
}

void SequenceEngine::SyncWithMemory() {
  if (context_.memoryEpoch == epoch_) return;
  // Someone cleared the whole KV cache (clear() while idle, or a benchmark): the records are stale.
  epoch_ = context_.memoryEpoch;
  for (EngineSlot& slot : slots_) slot.cached.clear();
  for (auto& job : running_) Fail(*job, "the KV cache was cleared while this request was generating");
  Reap();
}

void SequenceEngine::ApplyClear() {
  if (!context_.clearRequested.exchange(false)) return;
  if (running_.empty()) {
    context_.ClearMemory();
    epoch_ = context_.memoryEpoch;
    for (EngineSlot& slot : slots_) slot.cached.clear();
    return;
  }
  for (EngineSlot& slot : slots_) {
    if (slot.job == nullptr) {
      Evict(slot);
    } else {
      slot.forget = true;
    }
  }
}

void SequenceEngine::Admit(std::unique_ptr<EngineJob> owned) {
  EngineJob& job = *owned;
  try {
    job.sampler = std::make_unique<Sampler>(context_.vocab(), job.sampling, context_.sequenceSize,
                                            TokenTreeFor(*context_.model, job.sampling));
  } catch (...) {
    Fail(job, Task::CurrentExceptionMessage());
    return;
  }
  EngineSlot& slot = PickSlot(job.prompt, job.cacheReuse);
  // The prefix already in the sequence's cells is kept; the last prompt token is always decoded again for its
  // logits. Everything past the prefix is removed.
  size_t prefix = CommonPrefix(slot.cached, job.prompt);
  if (prefix == job.prompt.size()) prefix--;
  if (job.cacheReuse > 0 && !job.media) {
    prefix = ReuseCacheChunks(context_.memory(), slot.id, slot.cached, job.prompt, prefix, job.cacheReuse);
  }
  if (job.media) prefix = job.media->SafePrefix(prefix);
  Truncate(slot, prefix);
  job.cachedTokens = slot.cached.size();
  job.next = slot.cached.size();
  for (llama_token token : job.prompt) job.sampler->AcceptPrompt(token);
  slot.job = &job;
  slot.forget = false;
  job.slot = &slot;
  job.promptStart = Clock::now();
  running_.push_back(std::move(owned));
  active_.fetch_add(1);
}

EngineSlot& SequenceEngine::PickSlot(const std::vector<llama_token>& prompt, size_t cacheReuse) {
  // Among the idle sequences: the one whose whole cache the prompt continues (the next turn of a conversation),
  // the longest such; else the one sharing the longest prefix, if the prompt keeps at least half of its cache (the
  // same conversation, edited) or lies wholly in it (a prompt repeated); else an empty one, so that other
  // conversations keep their caches; else the least recently used. A cache that merely shares a system prompt is
  // not taken from its conversation while another sequence is free. With cache reuse, what a cache shares with the
  // prompt includes the chunks that would be shifted into place (a conversation whose oldest turns were dropped).
  EngineSlot* continuation = nullptr;
  EngineSlot* best = nullptr;
  size_t bestShared = 0;
  EngineSlot* empty = nullptr;
  EngineSlot* oldest = nullptr;
  for (EngineSlot& slot : slots_) {
    if (slot.job != nullptr) continue;
    if (oldest == nullptr || slot.lastUsed < oldest->lastUsed) oldest = &slot;
    if (slot.cached.empty()) {
      if (empty == nullptr) empty = &slot;
      continue;
    }
    const size_t prefix = CommonPrefix(slot.cached, prompt);
    const size_t shared =
        cacheReuse > 0 && prefix < slot.cached.size() ? CountReusable(slot.cached, prompt, prefix, cacheReuse) : prefix;
    if (prefix == slot.cached.size()) {
      if (continuation == nullptr || shared > continuation->cached.size()) continuation = &slot;
    } else if ((shared * 2 >= slot.cached.size() || shared == prompt.size()) && shared > bestShared) {
      best = &slot;
      bestShared = shared;
    }
  }
  if (continuation != nullptr) return *continuation;
  if (best != nullptr) return *best;
  if (empty != nullptr) return *empty;
  if (oldest == nullptr) throw std::logic_error("no idle sequence for an admitted request");
  return *oldest;
}

void SequenceEngine::DecodeStep() {
  ContextHandle& context = context_;
  const size_t contextSize = context.contextSize;
  const size_t batchSize = context.batchSize;
  if (!batch_) batch_ = std::make_unique<Batch>(static_cast<int32_t>(batchSize));
  Batch& batch = *batch_;
  struct Entry {
    EngineJob* job;
    size_t count;   // tokens of this request in the batch (1 when generating)
    bool output;    // its logits are sampled after the decode
    int32_t index;  // batch index of its last token
  };
  std::vector<Entry> entries;
  size_t promptCap = batchSize;

  for (;;) {
    // A request whose prompt reached an image has it evaluated first, on its own (libmtmd decodes it).
    for (auto& job : running_) {
      if (!job->generating && job->media) EvaluateMedia(*job);
    }
    Reap();
    if (running_.empty()) return;
    std::vector<EngineJob*> generating;
    std::vector<EngineJob*> prompting;
    for (auto& job : running_) (job->generating ? generating : prompting).push_back(job.get());

    size_t promptWanted = 0;
    for (EngineJob* job : prompting) promptWanted += job->TextLeft();
    promptWanted = std::min({promptWanted, batchSize - std::min(batchSize, generating.size()), promptCap});
    // Room in the shared cache: each token of each sequence takes a cell. Idle sequences give theirs up first.
    while (CachedTotal() + generating.size() + promptWanted > contextSize && EvictIdle()) {
    }
    const size_t used = CachedTotal();
    const size_t free = contextSize > used ? contextSize - used : 0;
    const size_t promptRoom = free > generating.size() ? std::min(promptWanted, free - generating.size()) : 0;
    if (free < generating.size() || (generating.empty() && promptRoom == 0)) {
      // Every cell belongs to a running sequence: a context shift of the largest that allows one frees some, else
      // the one holding the most ends here, and frees them.
      MakeRoomFromLargest();
      continue;
    }

    entries.clear();
    for (EngineJob* job : generating) entries.push_back({job, 1, true, -1});
    size_t room = promptRoom;
    for (EngineJob* job : prompting) {
      if (room == 0) break;
      const size_t n = std::min(job->TextLeft(), room);
      if (n == 0) continue;
      entries.push_back({job, n, job->next + n == job->prompt.size(), -1});
      room -= n;
    }
    // In sequence order: with a KV cache per sequence llama.cpp cuts the batch into ubatches of consecutive sequence
    // ids (split_equal), so a step whose sequences came in another order would run as several graph computations.
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return a.job->slot->id < b.job->slot->id; });
    batch.Clear();
    for (Entry& entry : entries) {
      EngineJob& job = *entry.job;
      if (job.generating) {
        batch.Add(job.pending, static_cast<llama_pos>(job.slot->cached.size()), true, job.slot->id);
      } else {
        const size_t end = job.next + entry.count;
        for (size_t i = job.next; i < end; i++) {
          batch.Add(job.prompt[i], static_cast<llama_pos>(i), i + 1 == job.prompt.size(), job.slot->id);
        }
      }
      entry.index = batch.size() - 1;
    }

    decoding_.clear();
    for (const Entry& entry : entries) decoding_.push_back(entry.job);
    context.activeCheck.store(this, std::memory_order_release);
    const int32_t rc = llama_decode(context.ctx, batch.get());
    context.activeCheck.store(nullptr, std::memory_order_release);
    decoding_.clear();

    if (rc == 1) {
      // No cells found for the batch (nothing was decoded): make room, decode less, or end the largest sequence.
      if (EvictIdle()) continue;
      if (promptRoom > 1) {
        promptCap = promptRoom / 2;
        continue;
      }
      MakeRoomFromLargest();
      continue;
    }

    if (rc != 0) {
      // Aborted or failed: keep what the memory reports as decoded (whole ubatches) and drop the rest.
      for (const Entry& entry : entries) {
        EngineJob& job = *entry.job;
        EngineSlot& slot = *job.slot;
        const llama_pos last = llama_memory_seq_pos_max(context.memory(), slot.id);
        const size_t present = last < 0 ? 0 : static_cast<size_t>(last) + 1;
        const size_t before = slot.cached.size();
        const size_t keep = std::min(present, before + entry.count);
        for (size_t i = before; i < keep; i++)
          slot.cached.push_back(job.generating ? job.pending : job.prompt[job.next++]);
        if (keep < before) slot.cached.resize(keep);
        if (!llama_memory_seq_rm(context.memory(), slot.id, static_cast<llama_pos>(keep), -1)) Evict(slot);
      }
      for (const Entry& entry : entries) {
        // rc 2: every request in the batch asked to stop (or the context is being disposed).
        if (rc == 2) {
          Finish(*entry.job, "abort");
        } else {
          Fail(*entry.job, std::string(entry.job->generating ? "cannot continue the generation: "
                                                             : "cannot evaluate the prompt: ") +
                               DecodeError(rc));
        }
      }
      Reap();
      return;
    }

    context.RecordDecode(static_cast<size_t>(batch.size()), static_cast<uint32_t>(entries.size()));
    for (const Entry& entry : entries) {
      EngineJob& job = *entry.job;
      if (job.generating) {
        job.slot->cached.push_back(job.pending);
        job.hasPending = false;
      } else {
        job.slot->cached.insert(job.slot->cached.end(), job.prompt.begin() + static_cast<std::ptrdiff_t>(job.next),
                                job.prompt.begin() + static_cast<std::ptrdiff_t>(job.next + entry.count));
        job.next += entry.count;
      }
    }
    const auto now = Clock::now();
    // The pieces and settlements of this step go out together once every sequence is sampled (held_).
    struct SendAfterSampling {
      explicit SendAfterSampling(SequenceEngine& engine) : engine(engine) { engine.holding_ = true; }
      ~SendAfterSampling() { engine.SendHeld(); }
      SequenceEngine& engine;
    } sendAfter(*this);
    for (const Entry& entry : entries) {
      if (!entry.output) continue;
      EngineJob& job = *entry.job;
      if (!job.generating) {
        job.promptMs = MillisecondsBetween(job.promptStart, now);
        job.generating = true;
        job.generateStart = now;
        if (job.maxTokens == 0) {
          Finish(job, "maxTokens");
          continue;
        }
      }
      if (job.StopRequested()) {
        Finish(job, "abort");
        continue;
      }
      Sample(job, entry.index);
    }
    Reap();
    return;
  }
}

void SequenceEngine::EvaluateMedia(EngineJob& job) {
  while (!job.finished && job.media->MediaAt(job.next)) {
    const size_t length = job.media->MediaLength(job.next);
    while (CachedTotal() + length > context_.contextSize && EvictIdle()) {
    }
    if (CachedTotal() + length > context_.contextSize || job.slot->cached.size() + length > context_.sequenceSize) {
      Finish(job, "contextFull");
      return;
    }
    EngineSlot& slot = *job.slot;
    decoding_.assign(1, &job);
    context_.activeCheck.store(this, std::memory_order_release);
    int32_t rc = 0;
    try {
      rc = job.media->Evaluate(context_, job.next, slot.id);
    } catch (...) {
      rc = -1;
    }
    context_.activeCheck.store(nullptr, std::memory_order_release);
    decoding_.clear();
    if (rc == 2 || (rc != 0 && job.StopRequested())) {
      Finish(job, "abort");
      return;
    }
    if (rc != 0) {
      Fail(job, "cannot evaluate an image or audio clip of the prompt (error " + std::to_string(rc) + ")");
      return;
    }
    context_.RecordDecode(length, 1);
    slot.cached.insert(slot.cached.end(), job.prompt.begin() + static_cast<std::ptrdiff_t>(job.next),
                       job.prompt.begin() + static_cast<std::ptrdiff_t>(job.next + length));
    job.next += length;
  }
}

void SequenceEngine::Sample(EngineJob& job, int32_t index) {
  const llama_vocab* vocab = context_.vocab();
  const llama_token token = job.sampler->Sample(context_.ctx, index);
  job.generated.push_back(token);
  if (!job.ignoreEos && llama_vocab_is_eog(vocab, token)) {
    Finish(job, "eos");
    return;
  }
  Emit(job, job.filter.Push(job.utf8.Push(TokenPiece(vocab, token, job.sampler->RendersSpecial(token)))));
  if (job.filter.stopped()) {
    Finish(job, "stop");
    return;
  }
  if (job.maxTokens >= 0 && job.generated.size() >= static_cast<size_t>(job.maxTokens)) {
    Finish(job, "maxTokens");  // no need to decode a token nobody will follow
    return;
  }
  // As llama-server: shift when the token to decode would take the sequence's last cell.
  if (job.contextShift && job.slot->cached.size() + 1 >= context_.sequenceSize) Shift(job);
  if (job.slot->cached.size() >= context_.sequenceSize) {
    Finish(job, "contextFull");
    return;
  }
  job.pending = token;
  job.hasPending = true;
}

void SequenceEngine::Emit(EngineJob& job, const std::string& piece) {
  if (piece.empty()) return;
  job.text += piece;
  if (!job.streams) return;
  Deliver([channel = job.channel, cancel = job.cancel, piece] {
    const bool posted = channel->Post([piece](Napi::Env env, JsSide& js) {
      if (js.onText.IsEmpty() || !js.callbackError.IsEmpty()) return;
      try {
        js.onText.Call({Napi::String::New(env, piece)});
      } catch (const Napi::Error& e) {
        // The callback's exception rejects the generation, which stops at its next step.
        js.callbackError = Napi::Reference<Napi::Value>::New(e.Value(), 1);
        js.cancel->store(true);
      }
    });
    if (!posted) cancel->store(true);  // the environment is going away
  });
}

void SequenceEngine::Deliver(std::function<void()> post) {
  if (holding_) {
    held_.push_back(std::move(post));
  } else {
    post();
  }
}

void SequenceEngine::SendHeld() {
  holding_ = false;
  for (auto& post : held_) post();
  held_.clear();
}

void SequenceEngine::Finish(EngineJob& job, const char* reason) {
  if (job.finished) return;
  const auto now = Clock::now();
  if (!job.filter.stopped()) {
    Emit(job, job.filter.Push(job.utf8.Flush()));
    Emit(job, job.filter.Flush());
  }
  job.finished = true;
  Outcome outcome;
  outcome.text = std::move(job.text);
  outcome.tokens = std::move(job.generated);
  outcome.stopReason = reason;
  outcome.promptTokens = job.prompt.size();
  outcome.cachedTokens = job.cachedTokens;
  outcome.discardedTokens = job.discardedTokens;
  outcome.grammarResamples = job.sampler ? job.sampler->resamples() : 0;
  outcome.promptMs = job.generating ? job.promptMs : MillisecondsBetween(job.promptStart, now);
  outcome.generateMs = job.generating ? MillisecondsBetween(job.generateStart, now) : 0;
  // The sequence is free (and counted so) before JS hears that the request ended.
  ReleaseSlot(job);
  Deliver([channel = job.channel, outcome = std::move(outcome)]() mutable {
    SettleAndClose(*channel, std::move(outcome));
  });
}

void SequenceEngine::Fail(EngineJob& job, const std::string& message) {
  if (job.finished) return;
  job.finished = true;
  Outcome outcome;
  outcome.failed = true;
  outcome.error = message;
  ReleaseSlot(job);
  Deliver([channel = job.channel, outcome = std::move(outcome)]() mutable {
    SettleAndClose(*channel, std::move(outcome));
  });
}

void SequenceEngine::ReleaseSlot(EngineJob& job) {
  EngineSlot* slot = job.slot;
  if (slot == nullptr) return;
  active_.fetch_sub(1);
  job.slot = nullptr;
  slot->job = nullptr;
  slot->lastUsed = ++clock_;
  // The sequence's cells stay as its prompt cache for the next request, unless a clear() came meanwhile.
  if (slot->forget) {
    slot->forget = false;
    Evict(*slot);
  }
  context_.cachedCount.store(CachedTotal());
}

void SequenceEngine::Reap() {
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& job) { return job->finished; }),
                 running_.end());
}

void SequenceEngine::Truncate(EngineSlot& slot, size_t n) {
  if (n >= slot.cached.size()) return;
  if (!llama_memory_seq_rm(context_.memory(), slot.id, static_cast<llama_pos>(n), -1)) {
    // Memory that cannot drop part of a sequence (recurrent models): start it over.
    Evict(slot);
    return;
  }
  slot.cached.resize(n);
}

void SequenceEngine::Evict(EngineSlot& slot) {
  if (!slot.cached.empty()) llama_memory_seq_rm(context_.memory(), slot.id, -1, -1);
  slot.cached.clear();
}

bool SequenceEngine::EvictIdle() {
  EngineSlot* oldest = nullptr;
  for (EngineSlot& slot : slots_) {
    if (slot.job != nullptr || slot.cached.empty()) continue;
    if (oldest == nullptr || slot.lastUsed < oldest->lastUsed) oldest = &slot;
  }
  if (oldest == nullptr) return false;
  Evict(*oldest);
  return true;
}

size_t SequenceEngine::CachedTotal() const {
  size_t total = 0;
  for (const EngineSlot& slot : slots_) total += slot.cached.size();
  return total;
}

namespace {
void RequireIdle(const SequenceEngine& engine) {
  if (!engine.Idle()) throw std::runtime_error("the context is generating: save or restore a sequence when it is idle");
}
}  // namespace

bool SequenceEngine::FindSequence(const std::vector<llama_token>& tokens, llama_seq_id* id,
                                  std::vector<llama_token>* cached) {
  RequireIdle(*this);
  SyncWithMemory();
  EngineSlot* best = nullptr;
  size_t bestShared = 0;
  for (EngineSlot& slot : slots_) {
    const size_t shared = CommonPrefix(slot.cached, tokens);
    if (shared > bestShared) {
      best = &slot;
      bestShared = shared;
    }
  }
  if (best == nullptr) return false;
  Truncate(*best, bestShared);
  context_.cachedCount.store(CachedTotal());
  if (best->cached.empty()) return false;
  *id = best->id;
  *cached = best->cached;
  return true;
}

llama_seq_id SequenceEngine::ClaimSequence(size_t count) {
  RequireIdle(*this);
  SyncWithMemory();
  EngineSlot* chosen = nullptr;
  for (EngineSlot& slot : slots_) {
    if (chosen == nullptr || (slot.cached.empty() && !chosen->cached.empty()) ||
        (slot.cached.empty() == chosen->cached.empty() && slot.lastUsed < chosen->lastUsed)) {
      chosen = &slot;
    }
  }
  Evict(*chosen);
  while (CachedTotal() + count > context_.contextSize && EvictIdle()) {
  }
  context_.cachedCount.store(CachedTotal());
  return chosen->id;
}

void SequenceEngine::Restored(llama_seq_id id, std::vector<llama_token> tokens) {
  EngineSlot& slot = slots_.at(static_cast<size_t>(id));
  slot.cached = std::move(tokens);
  slot.lastUsed = ++clock_;
  context_.cachedCount.store(CachedTotal());
}

bool SequenceEngine::Shift(EngineJob& job) {
  EngineSlot& slot = *job.slot;
  const size_t keep = ShiftKeep(slot.cached, job.keep, context_.vocab());
  const size_t discarded = ShiftSequence(context_.memory(), slot.id, slot.cached, keep);
  job.discardedTokens += discarded;
  return discarded > 0;
}

void SequenceEngine::MakeRoomFromLargest() {
  if (ShiftLargest()) return;
  EngineJob* largest = Largest();
  EngineSlot* slot = largest->slot;
  Finish(*largest, "contextFull");
  Evict(*slot);
  Reap();
}

bool SequenceEngine::ShiftLargest() {
  EngineJob* largest = nullptr;
  for (const auto& job : running_) {
    if (!job->generating || !job->contextShift) continue;
    if (largest == nullptr || job->slot->cached.size() > largest->slot->cached.size()) largest = job.get();
  }
  return largest != nullptr && Shift(*largest);
}

EngineJob* SequenceEngine::Largest() const {
  EngineJob* largest = nullptr;
  for (const auto& job : running_) {
    if (largest == nullptr || job->slot->cached.size() > largest->slot->cached.size()) largest = job.get();
  }
  return largest;
}

}  // namespace llama_oci
