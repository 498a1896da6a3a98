#include "task.h"

#include <new>

#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace llama_oci {

void NameThisThread(const char* name) {
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#elif defined(__APPLE__)
  pthread_setname_np(name);
#else
  (void)name;
#endif
}

Napi::Promise Task::Start(Napi::Env env, std::unique_ptr<Task> task) {
  task->deferred_ = std::make_unique<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = task->deferred_->Promise();
  napi_value name = Napi::String::New(env, "llama-oci");
  Task* raw = task.get();
  napi_status status = napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, raw, &Task::Finalize, raw,
                                                       &Task::CallJs, &raw->tsfn_);
  if (status != napi_ok) throw Napi::Error::New(env, "cannot create a thread-safe function for a worker");
  // From here on the thread-safe function's finalizer owns the task.
  task.release();
  try {
    raw->thread_ = std::thread([raw] { raw->Main(); });
  } catch (const std::exception& e) {
    raw->failed_ = true;
    raw->error_ = std::string("cannot start a worker thread: ") + e.what();
    raw->Settle(env);
    napi_release_threadsafe_function(raw->tsfn_, napi_tsfn_release);
  }
  return promise;
}

Napi::Promise Task::Rejected(Napi::Env env, const std::string& message) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(Napi::Error::New(env, message).Value());
  return deferred.Promise();
}

Napi::Promise Task::Rejected(Napi::Env env, const Napi::Error& error) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(error.Value());
  return deferred.Promise();
}

Napi::Promise Task::RejectedWithCurrentException(Napi::Env env) {
  try {
    throw;
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  } catch (...) {
    return Rejected(env, CurrentExceptionMessage());
  }
}

std::string Task::CurrentExceptionMessage() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return "out of memory";
  } catch (const std::exception& e) {
    const char* what = e.what();
    return what != nullptr && *what != '\0' ? what : "unexpected native error";
  } catch (...) {
    return "unexpected native error";
  }
}

void Task::Main() {
  NameThisThread("llama-oci-task");
  // Counted as inside llama.cpp until it has handed its result over, so that exit() waits for it (abort.h).
  BusyScope busy;
  // Nothing may escape a thread's function (that would terminate the process): every failure rejects the promise.
  try {
    Run();
  } catch (...) {
    failed_ = true;
    try {
      error_ = CurrentExceptionMessage();
    } catch (...) {
      error_.clear();
    }
  }
  bool posted = false;
  try {
    posted = Post([this](Napi::Env env) { Settle(env); });
  } catch (...) {
    // Out of memory for the message itself: the promise stays pending rather than the process dying.
  }
  if (posted) napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
  // When Post fails the environment is closing: the thread-safe function must not be touched again.
}

bool Task::Post(std::function<void(Napi::Env)> fn) {
  if (closing_) return false;
  auto* boxed = new std::function<void(Napi::Env)>(std::move(fn));
  if (napi_call_threadsafe_function(tsfn_, boxed, napi_tsfn_nonblocking) != napi_ok) {
    delete boxed;
    closing_ = true;
    return false;
  }
  return true;
}

void Task::CallJs(napi_env env, napi_value, void*, void* data) {
  std::unique_ptr<std::function<void(Napi::Env)>> fn(static_cast<std::function<void(Napi::Env)>*>(data));
  if (env == nullptr) return;  // environment tearing down: drop the message
  // Called by Node directly, outside node-addon-api's wrappers: an exception escaping here would abort the process.
  // The callbacks record their own failures (FailWith) and Settle rejects on its own errors.
  try {
    Napi::HandleScope scope(env);
    (*fn)(Napi::Env(env));
  } catch (...) {
  }
}

void Task::FailWith(const Napi::Value& error) {
  if (callbackError_.IsEmpty()) callbackError_ = Napi::Persistent(error);
}

void Task::Settle(Napi::Env env) {
  if (!callbackError_.IsEmpty()) {
    deferred_->Reject(callbackError_.Value());
    return;
  }
  if (failed_) {
    deferred_->Reject(Napi::Error::New(env, error_.empty() ? "unexpected native error" : error_).Value());
    return;
  }
  try {
    deferred_->Resolve(Result(env));
  } catch (const Napi::Error& e) {
    deferred_->Reject(e.Value());
  } catch (...) {
    deferred_->Reject(Napi::Error::New(env, CurrentExceptionMessage()).Value());
  }
}

void Task::Finalize(napi_env, void* data, void*) {
  auto* task = static_cast<Task*>(data);
  // Normally the thread has already finished (its release is what brings us here); at environment teardown this
  // stops a running worker at its next check, so joining does not wait for a whole generation.
  task->stop_.cancel.store(true);
  if (task->thread_.joinable()) task->thread_.join();
  delete task;
}

}  // namespace llama_oci
