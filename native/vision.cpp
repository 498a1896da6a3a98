#include "vision.h"

#include <climits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "context.h"
#include "js-args.h"
#include "log.h"
#include "task.h"

// llama.cpp's libmtmd (tools/mtmd).
#include <mtmd-helper.h>
#include <mtmd.h>

namespace llama_oci {

namespace {

// Tags of the External values JS holds: a projector and a prompt with media (N-API type tagging).
const napi_type_tag kProjectorTag = {0x6c6c616d616f6369ULL, 0x70726f6a6563746fULL};
const napi_type_tag kMediaPromptTag = {0x6c6c616d616f6369ULL, 0x6d65646961707274ULL};

struct ProjectorBox {
  ProjectorPtr projector;
};

struct MediaPromptBox {
  MediaPromptPtr prompt;
};

uint32_t HashText(const char* text) {
  uint32_t hash = 0x811c9dc5u;
  for (const char* c = text; c != nullptr && *c != '\0'; c++)
    hash = (hash ^ static_cast<unsigned char>(*c)) * 0x01000193u;
  return hash;
}

const ProjectorPtr& ProjectorArg(const Napi::CallbackInfo& info, size_t index) {
  Napi::Env env = info.Env();
  Napi::Value value = info[index];
  if (!value.IsExternal() || !value.As<Napi::External<ProjectorBox>>().CheckTypeTag(&kProjectorTag)) {
    throw Napi::TypeError::New(env, "expected a projector from loadProjector()");
  }
  const ProjectorPtr& projector = value.As<Napi::External<ProjectorBox>>().Data()->projector;
  if (!projector) throw Napi::Error::New(env, "the projector has been disposed");
  return projector;
}

ModelPtr ModelArg(const Napi::CallbackInfo& info, size_t index) {
  Napi::Env env = info.Env();
  Napi::Value value = info[index];
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(GetAddonData(env).modelClass.Value())) {
    throw Napi::TypeError::New(env, "expected a NativeModel");
  }
  return ModelWrap::Unwrap(value.As<Napi::Object>())->Handle(env);
}

class LoadProjectorTask : public Task {
 public:
  LoadProjectorTask(ModelPtr model, std::string path, int threads, bool useGpu)
      : model_(std::move(model)), path_(std::move(path)), threads_(threads), useGpu_(useGpu) {}

 protected:
  void Run() override {
    LogCapture capture;
    mtmd_context_params params = mtmd_context_params_default();
    params.use_gpu = useGpu_;
    params.print_timings = false;
    params.warmup = false;
    params.media_marker = mtmd_default_marker();
    if (threads_ > 0) params.n_threads = threads_;
    mtmd_context* ctx = mtmd_init_from_file(path_.c_str(), model_->model, params);
    if (ctx == nullptr) {
      const std::string why = capture.FirstError();
      throw std::runtime_error("cannot load the projector " + path_ + (why.empty() ? "" : ": " + why));
    }
    projector_ = std::make_shared<Projector>(model_, ctx, path_);
  }

  Napi::Value Result(Napi::Env env) override {
    auto external = Napi::External<ProjectorBox>::New(env, new ProjectorBox{std::move(projector_)},
                                                      [](Napi::Env, ProjectorBox* box) { delete box; });
    external.TypeTag(&kProjectorTag);
    return external;
  }

 private:
  ModelPtr model_;
  std::string path_;
  int threads_;
  bool useGpu_;
  ProjectorPtr projector_;
};

// One media part of a prompt: the file's bytes, and whether its part said audio (else an image).
struct MediaInput {
  std::vector<unsigned char> bytes;
  bool audio = false;
};

class TokenizeMediaTask : public Task {
 public:
  TokenizeMediaTask(ProjectorPtr projector, std::string text, std::vector<MediaInput> media, bool addSpecial,
                    bool parseSpecial)
      : projector_(std::move(projector)),
        text_(std::move(text)),
        media_(std::move(media)),
        addSpecial_(addSpecial),
        parseSpecial_(parseSpecial) {}

 protected:
  void Run() override {
    if (text_.size() > static_cast<size_t>(INT32_MAX)) throw std::runtime_error("text too long to tokenize");
    CheckTokenizer(projector_->model->vocab(), addSpecial_);
    LogCapture capture(true);
    mtmd_context* ctx = projector_->ctx;
    std::vector<mtmd_bitmap*> bitmaps;
    const auto freeBitmaps = [&bitmaps] {
      for (mtmd_bitmap* bitmap : bitmaps) mtmd_bitmap_free(bitmap);
      bitmaps.clear();
    };
    const auto fail = [&freeBitmaps](const std::string& message) {
      freeBitmaps();
      throw std::runtime_error(message);
    };
    const std::string takes = std::string(mtmd_support_vision(ctx) ? "images" : "") +
                              (mtmd_support_vision(ctx) && mtmd_support_audio(ctx) ? " and " : "") +
                              (mtmd_support_audio(ctx) ? "audio" : "");
    size_t images = 0;
    size_t clips = 0;
    for (const MediaInput& item : media_) {
      // Numbered by kind, as the JS side names the parts: "image 2", "audio 1".
      const std::string label = item.audio ? "audio " + std::to_string(++clips) : "image " + std::to_string(++images);
      if (item.audio ? !mtmd_support_audio(ctx) : !mtmd_support_vision(ctx)) {
        fail(label + ": the projector " + projector_->path + " does not take " + (item.audio ? "audio" : "images") +
             " (it takes " + takes + ")");
      }
      // libmtmd's helper tells audio (WAV, MP3, FLAC, decoded by miniaudio and resampled to the projector's rate)
      // from an image (stb_image) by the file's first bytes.
      mtmd_helper_bitmap_wrapper wrapped = mtmd_helper_bitmap_init_from_buf(ctx, item.bytes.data(), item.bytes.size(),
                                                                            false, mtmd_helper_init_opt_default());
      if (wrapped.video_ctx != nullptr) mtmd_helper_video_free(wrapped.video_ctx);
      if (wrapped.bitmap == nullptr) {
        fail(label + " (" + std::to_string(item.bytes.size()) + " bytes) cannot be decoded: " +
             (item.audio ? "give a WAV, MP3 or FLAC file" : "give a PNG, JPEG, BMP or GIF image"));
      }
      bitmaps.push_back(wrapped.bitmap);
      if (mtmd_bitmap_is_audio(wrapped.bitmap) != item.audio) {
        fail(label + " is " +
             (item.audio ? "an image, not audio: send it as an image part"
                         : "audio, not an image: send it as an audio part"));
      }
    }
    mtmd_input_chunks* chunks = mtmd_input_chunks_init();
    mtmd_input_text text{text_.data(), text_.size(), addSpecial_, parseSpecial_};
    int32_t rc = 0;
    try {
      std::lock_guard<std::mutex> lock(projector_->mutex);
      rc = mtmd_tokenize(ctx, chunks, &text, const_cast<const mtmd_bitmap**>(bitmaps.data()), bitmaps.size());
    } catch (const std::exception& e) {
      freeBitmaps();
      mtmd_input_chunks_free(chunks);
      throw std::runtime_error(std::string("cannot tokenize the prompt with its media: ") + e.what());
    }
    freeBitmaps();
    if (rc != 0) {
      mtmd_input_chunks_free(chunks);
      if (rc == 1) {
        throw std::runtime_error("the prompt's media markers do not match the " + std::to_string(media_.size()) +
                                 " images and audio clips given");
      }
      const std::string why = capture.FirstError();
      throw std::runtime_error("cannot preprocess the media" + (why.empty() ? std::string() : ": " + why));
    }
    prompt_ = std::make_shared<MediaPrompt>(projector_, chunks);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("tokens", TokensToJs(env, prompt_->tokens()));
    auto external = Napi::External<MediaPromptBox>::New(env, new MediaPromptBox{std::move(prompt_)},
                                                        [](Napi::Env, MediaPromptBox* box) { delete box; });
    external.TypeTag(&kMediaPromptTag);
    out.Set("media", external);
    return out;
  }

 private:
  ProjectorPtr projector_;
  std::string text_;
  std::vector<MediaInput> media_;
  bool addSpecial_;
  bool parseSpecial_;
  MediaPromptPtr prompt_;
};

// loadProjector(model, path, { threads, useGpu }) -> Promise<projector>
Napi::Value LoadProjector(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    ModelPtr model = ModelArg(info, 0);
    const std::string path = StringArg(info, 1, "path");
    int threads = 0;
    bool useGpu = true;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object options = info[2].As<Napi::Object>();
      threads = IntField(options, "threads", 0);
      useGpu = BoolField(options, "useGpu", true);
    }
    return Task::Start(env, std::make_unique<LoadProjectorTask>(std::move(model), path, threads, useGpu));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

void DisposeProjector(const Napi::CallbackInfo& info) {
  Napi::Value value = info[0];
  if (!value.IsExternal() || !value.As<Napi::External<ProjectorBox>>().CheckTypeTag(&kProjectorTag)) {
    throw Napi::TypeError::New(info.Env(), "expected a projector from loadProjector()");
  }
  value.As<Napi::External<ProjectorBox>>().Data()->projector.reset();
}

Napi::Value ProjectorInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ProjectorPtr& projector = ProjectorArg(info, 0);
  Napi::Object out = Napi::Object::New(env);
  out.Set("vision", Napi::Boolean::New(env, mtmd_support_vision(projector->ctx)));
  out.Set("audio", Napi::Boolean::New(env, mtmd_support_audio(projector->ctx)));
  out.Set("path", Napi::String::New(env, projector->path));
  return out;
}

// tokenizeMedia(projector, text, media: { kind: "image" | "audio", data: Uint8Array }[], addSpecial, parseSpecial)
//   -> Promise<{ tokens, media }>
Napi::Value TokenizeMedia(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    ProjectorPtr projector = ProjectorArg(info, 0);
    std::string text = StringArg(info, 1, "text");
    const char* shape = "media must be an array of { kind: \"image\" | \"audio\", data: Uint8Array }";
    if (!info[2].IsArray()) throw Napi::TypeError::New(env, shape);
    Napi::Array list = info[2].As<Napi::Array>();
    std::vector<MediaInput> media;
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value item = list.Get(i);
      if (!item.IsObject()) throw Napi::TypeError::New(env, shape);
      Napi::Value kind = item.As<Napi::Object>().Get("kind");
      Napi::Value data = item.As<Napi::Object>().Get("data");
      const std::string kindName = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : std::string();
      if ((kindName != "image" && kindName != "audio") || !data.IsTypedArray() ||
          data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw Napi::TypeError::New(env, shape);
      }
      auto bytes = data.As<Napi::Uint8Array>();
      media.push_back(
          {std::vector<unsigned char>(bytes.Data(), bytes.Data() + bytes.ElementLength()), kindName == "audio"});
    }
    const bool addSpecial = BoolArg(info, 3, true);
    const bool parseSpecial = BoolArg(info, 4, true);
    return Task::Start(env, std::make_unique<TokenizeMediaTask>(std::move(projector), std::move(text), std::move(media),
                                                                addSpecial, parseSpecial));
  } catch (...) {
    return Task::RejectedWithCurrentException(env);
  }
}

Napi::Value MediaMarker(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), mtmd_default_marker()); }

}  // namespace

Projector::Projector(ModelPtr model, mtmd_context* ctx, std::string path)
    : model(std::move(model)), ctx(ctx), path(std::move(path)) {}

Projector::~Projector() { mtmd_free(ctx); }

MediaPrompt::MediaPrompt(ProjectorPtr projector, mtmd_input_chunks* chunks)
    : projector_(std::move(projector)), chunks_(chunks) {
  const size_t count = mtmd_input_chunks_size(chunks_);
  for (size_t i = 0; i < count; i++) {
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks_, i);
    if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
      size_t n = 0;
      const llama_token* tokens = mtmd_input_chunk_get_tokens_text(chunk, &n);
      tokens_.insert(tokens_.end(), tokens, tokens + n);
      continue;
    }
    const llama_pos positions = mtmd_input_chunk_get_n_pos(chunk);
    const size_t length = positions > 0 ? static_cast<size_t>(positions) : 0;
    if (length == 0) continue;
    // Placeholders: negative, from the media's hash (its SHA-256, as mtmd's helper names it) and the position.
    const uint32_t base = HashText(mtmd_input_chunk_get_id(chunk));
    media_.push_back({tokens_.size(), length, chunk});
    for (size_t j = 0; j < length; j++) {
      const uint32_t mixed = (base + static_cast<uint32_t>(j) * 0x9e3779b1u) & 0x3fffffffu;
      tokens_.push_back(-1 - static_cast<llama_token>(mixed));
    }
  }
}

MediaPrompt::~MediaPrompt() { mtmd_input_chunks_free(chunks_); }

const MediaPrompt::Span* MediaPrompt::SpanAt(size_t pos) const {
  for (const Span& span : media_) {
    if (pos >= span.start && pos < span.start + span.length) return &span;
  }
  return nullptr;
}

size_t MediaPrompt::SafePrefix(size_t prefix) const {
  const Span* span = SpanAt(prefix);
  return span != nullptr ? span->start : prefix;
}

size_t MediaPrompt::TextRun(size_t pos) const {
  for (const Span& span : media_) {
    if (span.start >= pos) return span.start - pos;
  }
  return tokens_.size() > pos ? tokens_.size() - pos : 0;
}

bool MediaPrompt::MediaAt(size_t pos) const {
  const Span* span = SpanAt(pos);
  return span != nullptr && span->start == pos;
}

size_t MediaPrompt::MediaLength(size_t pos) const {
  const Span* span = SpanAt(pos);
  return span != nullptr ? span->length : 0;
}

int32_t MediaPrompt::Evaluate(ContextHandle& context, size_t pos, llama_seq_id seq) const {
  const Span* span = SpanAt(pos);
  if (span == nullptr || span->start != pos) throw std::logic_error("no media chunk starts at this position");
  int32_t rc = 0;
  {
    std::lock_guard<std::mutex> lock(projector_->mutex);
    llama_pos next = static_cast<llama_pos>(pos);
    try {
      rc = mtmd_helper_eval_chunk_single(projector_->ctx, context.ctx, span->chunk, static_cast<llama_pos>(pos), seq,
                                         static_cast<int32_t>(context.batchSize), false, &next);
    } catch (...) {
      rc = -1;
    }
  }
  if (rc != 0) llama_memory_seq_rm(context.memory(), seq, static_cast<llama_pos>(pos), -1);
  return rc;
}

MediaPromptPtr MediaPromptFrom(const Napi::Value& value) {
  if (value.IsUndefined() || value.IsNull()) return nullptr;
  if (!value.IsExternal() || !value.As<Napi::External<MediaPromptBox>>().CheckTypeTag(&kMediaPromptTag)) {
    throw Napi::TypeError::New(value.Env(), "media must be a prompt from tokenizeMedia()");
  }
  return value.As<Napi::External<MediaPromptBox>>().Data()->prompt;
}

void CheckPromptTokens(const llama_vocab* vocab, const std::vector<llama_token>& tokens, const MediaPrompt* media) {
  if (media == nullptr) {
    CheckTokens(vocab, tokens);
    return;
  }
  const llama_token n = llama_vocab_n_tokens(vocab);
  for (size_t i = 0; i < tokens.size(); i++) {
    if (tokens[i] >= n) {
      throw std::runtime_error("token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                               " is outside the vocabulary (0.." + std::to_string(n - 1) + ")");
    }
  }
  if (!tokens.empty() && tokens.back() < 0) {
    throw std::runtime_error("a prompt cannot end with an image or audio: put text (the assistant's prompt) after it");
  }
}

void RegisterVision(Napi::Env env, Napi::Object exports) {
  // libmtmd logs through its own callback: the same one as llama.cpp's, so that setLogger sees it too.
  ggml_log_callback callback = nullptr;
  void* userData = nullptr;
  llama_log_get(&callback, &userData);
  if (callback != nullptr) mtmd_helper_log_set(callback, userData);
  exports.Set("loadProjector", Napi::Function::New(env, LoadProjector, "loadProjector"));
  exports.Set("disposeProjector", Napi::Function::New(env, DisposeProjector, "disposeProjector"));
  exports.Set("projectorInfo", Napi::Function::New(env, ProjectorInfo, "projectorInfo"));
  exports.Set("tokenizeMedia", Napi::Function::New(env, TokenizeMedia, "tokenizeMedia"));
  exports.Set("mediaMarker", Napi::Function::New(env, MediaMarker, "mediaMarker"));
}

}  // namespace llama_oci
