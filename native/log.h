// llama.cpp's (and ggml's) log, which is process-wide: one callback installed at start-up forwards each message to
// the JS logger set with setLogger, or drops it, so nothing reaches stderr unless asked for.
#pragma once

#include <napi.h>

#include <string>

namespace llama_oci {

// Installs the process-wide callback (idempotent) and silences llama.cpp's common library, which logs on its own.
void InstallLogCallback();

// setLogger(callback | null, minLevel)
void SetLogger(const Napi::CallbackInfo& info);

// Appends an error-level line to this thread's active LogCapture, if any (called by the log callback).
void CaptureLogLine(int level, const char* text);
// Whether this thread's active LogCapture is a silent one.
bool LoggingSilenced();

// Collects the error messages llama.cpp logs on this thread while the capture lives, so a failure can be
// reported with llama.cpp's reason (e.g. why a GGUF did not load) instead of a bare "failed".
class LogCapture {
 public:
  // A `silent` capture also keeps what is logged meanwhile from the JS logger (for a probe whose failures are
  // reported by the real attempt that follows).
  explicit LogCapture(bool silent = false);
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // The first error llama.cpp logged (the root cause; later ones only say that the caller failed too), on one
  // line, without the "function_name: " prefixes; empty when nothing was logged.
  std::string FirstError() const;

 private:
  std::string text_;
  LogCapture* previous_;
  bool silent_;
  friend void CaptureLogLine(int level, const char* text);
  friend bool LoggingSilenced();
};

}  // namespace llama_oci
