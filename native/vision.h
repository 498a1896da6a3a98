// Images and audio in prompts through llama.cpp's libmtmd (tools/mtmd): a model's projector (its mmproj GGUF),
// prompts tokenized together with their media, and the evaluation of a media chunk into a sequence's KV cells.
//
// A prompt with media is a list of chunks (text tokens, or an image's or an audio clip's embeddings). Both
// generation paths (the per-request worker and the sequence engine) keep their token vectors: each position of a
// media chunk holds a placeholder, a negative number derived from the media's hash and the position in it, so that
// a cached prefix with the same image (or clip) matches and one with another does not. Where a placeholder run
// begins, the generation loop evaluates the whole chunk with mtmd_helper_eval_chunk_single instead of decoding tokens.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"
#include "model.h"

struct mtmd_context;
struct mtmd_input_chunks;
struct mtmd_input_chunk;

namespace llama_oci {

struct ContextHandle;

// One model's projector: the mtmd context, used by one thread at a time (it is not thread-safe).
struct Projector {
  ModelPtr model;
  mtmd_context* ctx = nullptr;
  std::string path;
  std::mutex mutex;

  Projector(ModelPtr model, mtmd_context* ctx, std::string path);
  ~Projector();
  Projector(const Projector&) = delete;
  Projector& operator=(const Projector&) = delete;
};

using ProjectorPtr = std::shared_ptr<Projector>;

// A prompt tokenized with its media (immutable once made; shared by the request that generates from it).
class MediaPrompt {
 public:
  MediaPrompt(ProjectorPtr projector, mtmd_input_chunks* chunks);
  ~MediaPrompt();
  MediaPrompt(const MediaPrompt&) = delete;
  MediaPrompt& operator=(const MediaPrompt&) = delete;

  // Text tokens, and a negative placeholder for each position of a media chunk.
  const std::vector<llama_token>& tokens() const { return tokens_; }
  const ModelPtr& model() const { return projector_->model; }

  // `prefix` moved back to the start of the media chunk it ends inside of (a chunk is evaluated whole, or not kept).
  size_t SafePrefix(size_t prefix) const;
  // Positions from `pos` to the next media chunk (or the end).
  size_t TextRun(size_t pos) const;
  // Whether a media chunk starts at `pos`.
  bool MediaAt(size_t pos) const;
  // Positions of the media chunk that starts at `pos`.
  size_t MediaLength(size_t pos) const;
  // Encodes the media chunk starting at `pos` and decodes its embeddings into sequence `seq` at positions from `pos`
  // (the caller holds the context's mutex, and the cells from `pos` on are free). Returns 0 on success, else what
  // llama_decode or the encoder returned (2: aborted); the cells from `pos` on are then removed again.
  int32_t Evaluate(ContextHandle& context, size_t pos, llama_seq_id seq) const;

 private:
  struct Span {
    size_t start;
    size_t length;
    const mtmd_input_chunk* chunk;
  };
  const Span* SpanAt(size_t pos) const;

  ProjectorPtr projector_;
  mtmd_input_chunks* chunks_;
  std::vector<llama_token> tokens_;
  std::vector<Span> media_;  // in position order
};

using MediaPromptPtr = std::shared_ptr<const MediaPrompt>;

// The MediaPrompt of a NativeMediaPrompt value (generate params' `media`); null for undefined or null. Throws
// Napi::TypeError for anything else.
MediaPromptPtr MediaPromptFrom(const Napi::Value& value);

// Checks a prompt's tokens: in the vocabulary, or (with `media`) its placeholders.
void CheckPromptTokens(const llama_vocab* vocab, const std::vector<llama_token>& tokens, const MediaPrompt* media);

// loadProjector, disposeProjector, projectorInfo, tokenizeMedia and mediaMarker on the addon's exports.
void RegisterVision(Napi::Env env, Napi::Object exports);

}  // namespace llama_oci
