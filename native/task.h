// A unit of long work that runs on its own thread (never on the event loop, never on libuv's small thread pool,
// which a minute-long generation would starve) and settles a Promise on the JS thread. Messages to JS (progress,
// text pieces) and the final settlement travel through one thread-safe function, so they arrive in order.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "abort.h"

namespace llama_oci {

// Names the calling thread (at most 15 characters), as `top -H`, /proc/<pid>/task and debuggers show it; the
// threads llama.cpp starts from it inherit the name. Does nothing where the platform has no such call.
void NameThisThread(const char* name);

class Task {
 public:
  virtual ~Task() = default;

  // Starts `task` on a new thread and returns its promise; the task deletes itself once settled.
  static Napi::Promise Start(Napi::Env env, std::unique_ptr<Task> task);

  // A promise already rejected (for argument errors of promise-returning methods, which reject, never throw).
  static Napi::Promise Rejected(Napi::Env env, const std::string& message);
  static Napi::Promise Rejected(Napi::Env env, const Napi::Error& error);
  // Inside a catch block: a promise rejected with the exception being handled, whatever its type (a Napi::Error
  // keeps its JS value, a std::exception gives an Error with its message, anything else a generic Error).
  static Napi::Promise RejectedWithCurrentException(Napi::Env env);
  // The message of the exception being handled (inside a catch block).
  static std::string CurrentExceptionMessage();

 protected:
  // Runs on the worker thread; throw std::exception to reject the promise with its message.
  virtual void Run() = 0;
  // Runs on the JS thread after Run returned; its value resolves the promise (a thrown Napi::Error rejects it).
  virtual Napi::Value Result(Napi::Env env) = 0;

  // Queues `fn` to run on the JS thread (from the worker thread). Returns false once the environment is closing.
  bool Post(std::function<void(Napi::Env)> fn);

  // Rejects with this JS value instead of a result (e.g. the error a JS callback threw); JS thread only.
  void FailWith(const Napi::Value& error);

  StopFlags stop_;

 private:
  static void CallJs(napi_env env, napi_value, void* context, void* data);
  static void Finalize(napi_env env, void* data, void*);
  void Main();
  void Settle(Napi::Env env);

  napi_threadsafe_function tsfn_ = nullptr;
  std::unique_ptr<Napi::Promise::Deferred> deferred_;
  std::thread thread_;
  std::string error_;
  bool failed_ = false;
  bool closing_ = false;
  Napi::Reference<Napi::Value> callbackError_;
};

}  // namespace llama_oci
