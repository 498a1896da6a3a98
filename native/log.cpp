#include "log.h"

#include <memory>
#include <mutex>
#include <optional>

#include "ggml.h"
#include "llama.h"

// llama.cpp's common/log.h: angle brackets skip this directory, whose log.h is ours.
#include <log.h>

namespace llama_oci {

namespace {

struct LogLine {
  int level;
  std::string text;
};

void DeliverLogLine(Napi::Env env, Napi::Function callback, std::nullptr_t*, LogLine* line);

using LoggerFunction = Napi::TypedThreadSafeFunction<std::nullptr_t, LogLine, DeliverLogLine>;

// The one logger of the process (llama_log_set is process-wide). Guarded by `mutex`; `logger` is cleared before
// the thread-safe function is released or finalized, so no thread calls into a freed one.
std::mutex mutex;
std::optional<LoggerFunction> logger;
int minLevel = GGML_LOG_LEVEL_WARN;
thread_local int lastLevel = GGML_LOG_LEVEL_INFO;
thread_local LogCapture* activeCapture = nullptr;

const char* LevelName(int level) {
  switch (level) {
    case GGML_LOG_LEVEL_DEBUG: return "debug";
    case GGML_LOG_LEVEL_WARN: return "warn";
    case GGML_LOG_LEVEL_ERROR: return "error";
    default: return "info";
  }
}

int LevelFromName(const std::string& name) {
  if (name == "debug") return GGML_LOG_LEVEL_DEBUG;
  if (name == "info") return GGML_LOG_LEVEL_INFO;
  if (name == "warn") return GGML_LOG_LEVEL_WARN;
  if (name == "error") return GGML_LOG_LEVEL_ERROR;
  return -1;
}

void DeliverLogLine(Napi::Env env, Napi::Function callback, std::nullptr_t*, LogLine* line) {
  std::unique_ptr<LogLine> owned(line);
  if (env == nullptr || callback.IsEmpty()) return;
  try {
    callback.Call({Napi::String::New(env, LevelName(line->level)), Napi::String::New(env, line->text)});
  } catch (...) {
    // A throwing logger must not take the process down with it; the message is lost.
  }
}

// Called by ggml and llama.cpp on any thread, through ggml's C code: nothing may be thrown out of it.
void LogCallback(ggml_log_level level, const char* text, void*) noexcept {
  try {
    int effective = level;
    if (level == GGML_LOG_LEVEL_CONT) {
      effective = lastLevel;
    } else {
      if (level == GGML_LOG_LEVEL_NONE) effective = GGML_LOG_LEVEL_INFO;
      lastLevel = effective;
    }
    if (text == nullptr) return;
    CaptureLogLine(effective, text);
    if (LoggingSilenced()) return;
    std::lock_guard<std::mutex> lock(mutex);
    if (!logger || effective < minLevel) return;
    auto line = std::make_unique<LogLine>(LogLine{effective, text});
    if (logger->NonBlockingCall(line.get()) == napi_ok) line.release();
  } catch (...) {
    // Out of memory while logging: the line is lost.
  }
}

}  // namespace

void CaptureLogLine(int level, const char* text) {
  if (activeCapture != nullptr && level >= GGML_LOG_LEVEL_ERROR) activeCapture->text_ += text;
}

bool LoggingSilenced() { return activeCapture != nullptr && activeCapture->silent_; }

LogCapture::LogCapture(bool silent) : previous_(activeCapture), silent_(silent) { activeCapture = this; }
LogCapture::~LogCapture() { activeCapture = previous_; }

std::string LogCapture::FirstError() const {
  const size_t begin = text_.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  std::string line = text_.substr(begin, text_.find('\n', begin) - begin);
  // "llama_model_load: error loading model: <reason>" and "gguf_init_from_reader: <reason>": keep the reason.
  const std::string marker = "error loading model: ";
  const size_t at = line.find(marker);
  if (at != std::string::npos) line.erase(0, at + marker.size());
  const size_t colon = line.find(": ");
  if (colon != std::string::npos && line.find_first_of(" '\"") > colon) line.erase(0, colon + 2);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

void InstallLogCallback() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(LogCallback, nullptr);
    // common's logger prints from its own thread straight to stdout/stderr; below 0 it drops everything.
    common_log_set_verbosity_thold(-1);
  });
}

namespace {

void ReleaseCurrentLogger() {
  std::optional<LoggerFunction> old;
  {
    std::lock_guard<std::mutex> lock(mutex);
    old.swap(logger);
  }
  if (old) old->Release();
}

}  // namespace

void SetLogger(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Value callback = info[0];
  if (!callback.IsNull() && !callback.IsUndefined() && !callback.IsFunction()) {
    throw Napi::TypeError::New(env, "setLogger: callback must be a function or null");
  }
  int level = GGML_LOG_LEVEL_WARN;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    level = info[1].IsString() ? LevelFromName(info[1].As<Napi::String>().Utf8Value()) : -1;
    if (level < 0)
      throw Napi::TypeError::New(env, "setLogger: minLevel must be \"debug\", \"info\", \"warn\" or \"error\"");
  }
  ReleaseCurrentLogger();
  if (!callback.IsFunction()) return;

  // Each logger's thread-safe function clears the global slot itself when it is finalized (e.g. when the
  // environment shuts down), if it is still the current one.
  auto* self = new LoggerFunction();
  *self = LoggerFunction::New(
      env, callback.As<Napi::Function>(), "llama-oci-log", 0, 1, static_cast<std::nullptr_t*>(nullptr),
      [](Napi::Env, LoggerFunction* finalized, std::nullptr_t*) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (logger &&
              static_cast<napi_threadsafe_function>(*logger) == static_cast<napi_threadsafe_function>(*finalized)) {
            logger.reset();
          }
        }
        delete finalized;
      },
      self);
  // A logger must not keep the process alive.
  self->Unref(env);
  std::lock_guard<std::mutex> lock(mutex);
  logger = *self;
  minLevel = level;
}

}  // namespace llama_oci
