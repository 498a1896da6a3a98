// SequenceEngine: batched generation on a context with parallel > 1 sequences (llama-server's slots, simplified).
// One persistent thread runs one decode loop for the whole context. Each step gathers, for every running request,
// its last sampled token or its next prompt chunk, decodes them all with one llama_decode call (at most n_batch
// tokens: long prompts are split across steps, so the other sequences keep generating), then samples each request
// with its own sampler chain and streams its text through the request's own thread-safe function. A new request
// joins at the next step; more requests than sequences wait in FIFO order. Every sequence remembers the tokens its
// cells hold, so a request goes to the idle sequence whose cache shares the longest prefix with its prompt and only
// the rest is evaluated. With one unified KV cache the sequences share the context's n_ctx cells: the caches of idle
// sequences are dropped, least recently used first, when a running one needs the room. Without it (kvUnified false)
// each sequence has its own sequenceSize cells and ends, or shifts, where they are full.
#pragma once

#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "abort.h"
#include "llama.h"

namespace llama_oci {

struct ContextHandle;
using ContextPtr = std::shared_ptr<ContextHandle>;

// Opens once a thread has ended (and let go of what it held); Wait() returns at once if the thread never started.
class ExitLatch {
 public:
  void Started() {
    std::lock_guard<std::mutex> lock(mutex_);
    started_ = true;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return !started_ || open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool started_ = false;
  bool open_ = false;
};

struct EngineJob;
class Batch;

// One sequence of the context (its seq_id) and the tokens its cells hold at positions 0..n-1.
struct EngineSlot {
  llama_seq_id id = 0;
  std::vector<llama_token> cached;
  EngineJob* job = nullptr;  // the request generating on it, if any
  uint64_t lastUsed = 0;
  bool forget = false;  // a clear() came while it was busy: drop its cells when its request ends
};

class SequenceEngine : public DecodeAbortCheck {
 public:
  // `context` owns the engine; the engine's thread keeps the context alive while it runs.
  explicit SequenceEngine(ContextHandle& context);
  ~SequenceEngine() override;
  SequenceEngine(const SequenceEngine&) = delete;
  SequenceEngine& operator=(const SequenceEngine&) = delete;

  // JS thread: validates one NativeGenerateParams and queues it; the promise settles when its sequence ends. Starts
  // the thread on first use (with `self`, the context's own handle).
  Napi::Promise Submit(Napi::Env env, const ContextPtr& self, const Napi::Object& params);
  // JS thread: no more requests. abortRunning (dispose, teardown): the running and waiting requests end with
  // stopReason "abort"; otherwise (garbage collection) they finish. The thread ends after them.
  void Stop(bool abortRunning);
  // Makes the thread look at a pending clear() even when it has nothing to run.
  void Wake();
  // JS thread: how many requests are on their way to Submit (received, being tokenized). An idle engine that gets
  // a request while others are announced waits for them, at most kGatherWindow, so that requests arriving together
  // share their first step (one prompt evaluation) instead of the first one's prompt running alone while the rest
  // wait for it. A running engine never waits: a newcomer joins its next step.
  void Expect(size_t count);
  static constexpr std::chrono::milliseconds kGatherWindow{25};

  bool Idle() const { return active_.load() == 0 && pending_.load() == 0; }
  size_t Active() const { return active_.load(); }
  size_t Pending() const { return pending_.load(); }
  std::shared_ptr<ExitLatch> exitLatch() const { return exited_; }

  // llama.cpp's abort callback, during the engine's llama_decode: stop only when every request in it stopped.
  bool DecodeAbortRequested() const override;

  // Saving and restoring one sequence (state-worker.cpp): on a worker thread holding the context's mutex while the
  // engine runs no request (throws std::runtime_error otherwise). FindSequence: the idle sequence whose cache shares
  // the longest prefix with `tokens` (false if none shares any), cut to that prefix (what follows belongs to some
  // other request), with the tokens its cells then hold. ClaimSequence: a
  // sequence emptied for a restore of `count` tokens (idle caches are dropped until that many cells are free), then
  // Restored records what it holds.
  bool FindSequence(const std::vector<llama_token>& tokens, llama_seq_id* id, std::vector<llama_token>* cached);
  llama_seq_id ClaimSequence(size_t count);
  void Restored(llama_seq_id id, std::vector<llama_token> tokens);

 private:
  void Main(ContextPtr self);
  void Loop();
  void Step(std::vector<std::unique_ptr<EngineJob>>& admitted, bool abortAll);
  void Recover(std::vector<std::unique_ptr<EngineJob>>& admitted, const std::string& message);
  void SyncWithMemory();
  void ApplyClear();
  void Admit(std::unique_ptr<EngineJob> job);
  EngineSlot& PickSlot(const std::vector<llama_token>& prompt, size_t cacheReuse);
  void DecodeStep();
  void EvaluateMedia(EngineJob& job);
  void Sample(EngineJob& job, int32_t index);
  void Emit(EngineJob& job, const std::string& piece);
  // Hands a request's post (a piece, its settlement) to its channel, or holds it while a step samples (see held_).
  void Deliver(std::function<void()> post);
  void SendHeld();
  void Finish(EngineJob& job, const char* reason);
  void Fail(EngineJob& job, const std::string& message);
  void ReleaseSlot(EngineJob& job);
  void Reap();
  void Truncate(EngineSlot& slot, size_t n);
  void Evict(EngineSlot& slot);
  bool EvictIdle();
  // Context shift of a generating request's sequence (half of its tokens after `keep` go); false if nothing went.
  bool Shift(EngineJob& job);
  bool ShiftLargest();
  // Only running sequences hold cells: shift the largest that allows it, else end the one holding the most
  // ("contextFull") and free its cells.
  void MakeRoomFromLargest();
  size_t CachedTotal() const;
  EngineJob* Largest() const;

  ContextHandle& context_;
  const size_t sequences_;

  // Shared between the JS thread and the engine thread (guarded by mutex_).
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<EngineJob>> queue_;
  bool stop_ = false;
  bool abortAll_ = false;
  bool woken_ = false;
  size_t expected_ = 0;  // Expect()'s count
  std::thread thread_;
  std::shared_ptr<ExitLatch> exited_ = std::make_shared<ExitLatch>();
  std::atomic<size_t> active_{0};
  std::atomic<size_t> pending_{0};

  // The engine thread's own state, touched only while it holds the context's mutex.
  std::vector<EngineSlot> slots_;
  std::vector<std::unique_ptr<EngineJob>> running_;  // in the order they were admitted
  std::vector<const EngineJob*> decoding_;           // the requests in the llama_decode call under way
  std::unique_ptr<Batch> batch_;
  uint64_t clock_ = 0;
  uint64_t epoch_ = 0;  // the context's memoryEpoch the slots' records belong to
  // While a step samples its sequences, what they post is held and sent once all are sampled: the first post wakes
  // the JS thread, which would otherwise take a core from the sampling loop (between two decodes, on a machine with
  // as many cores as decode threads) and leave the next decode waiting for it.
  bool holding_ = false;
  std::vector<std::function<void()>> held_;
};

}  // namespace llama_oci
