// The parameters of NativeContext.generate (NativeGenerateParams in native-types.ts), read on the JS thread, and
// what both generation paths (the per-request worker and the batched sequence engine) share.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "abort.h"
#include "llama.h"
#include "sampling.h"
#include "vision.h"

namespace llama_oci {

struct GenerateParams {
  std::vector<llama_token> prompt;
  int32_t maxTokens = -1;
  SamplingOptions sampling;
  std::vector<std::string> stops;
  bool ignoreEos = false;
  // When the context fills while generating: discard half of the cached tokens after the first `keep` (shifting the
  // rest down, as llama-server's context shift does) and go on, instead of stopping with "contextFull".
  bool contextShift = false;
  size_t keep = 0;
  // At least this many tokens of the cache that the prompt continues after its common prefix are shifted into
  // place instead of evaluated again (llama-server's n_cache_reuse); 0 = off.
  size_t cacheReuse = 0;
  AbortFlag abort;
  Napi::Function onText;  // empty when none was given
  MediaPromptPtr media;   // a prompt with images (then `prompt` is its tokens and placeholders)
};

// Throws Napi::TypeError naming the field that is wrong.
GenerateParams ReadGenerateParams(const Napi::Object& params);

// The text of one token (its bytes may end inside a UTF-8 character); `special`: a special token's text too.
std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special = false);

// How many tokens a context shift keeps at the start: `keep`, but at least a leading BOS, and so that at least a
// few tokens can go.
size_t ShiftKeep(const std::vector<llama_token>& cached, size_t keep, const llama_vocab* vocab);

// Context shift of one sequence whose cells hold `cached` at positions 0..n-1: removes half of the tokens after the
// first `keep` and moves the rest down. Returns how many were discarded (0 when the memory cannot shift).
size_t ShiftSequence(llama_memory_t memory, llama_seq_id seq, std::vector<llama_token>& cached, size_t keep);

// llama-server's cache reuse: after the common prefix of `cached` and `prompt` (`prefix` tokens), moves chunks of at
// least `minChunk` tokens of the cache that the prompt continues with into place (KV shift), dropping what lies
// between. Returns the new number of cached prompt tokens; `cached` is updated and the rest of the cells removed.
// How many prompt tokens ReuseCacheChunks would leave cached (without touching anything).
size_t CountReusable(const std::vector<llama_token>& cached, const std::vector<llama_token>& prompt, size_t prefix,
                     size_t minChunk);
size_t ReuseCacheChunks(llama_memory_t memory, llama_seq_id seq, std::vector<llama_token>& cached,
                        const std::vector<llama_token>& prompt, size_t prefix, size_t minChunk);

}  // namespace llama_oci
