// An owned llama_batch with explicit positions, each token in one sequence (sequence 0 unless told otherwise)
// (llama_batch_init/llama_batch_free).
#pragma once

#include <stdexcept>

#include "llama.h"

namespace llama_oci {

class Batch {
 public:
  explicit Batch(int32_t capacity) : batch_(llama_batch_init(capacity, 0, 1)), capacity_(capacity) {}
  ~Batch() { llama_batch_free(batch_); }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  void Clear() { batch_.n_tokens = 0; }

  void Add(llama_token token, llama_pos pos, bool output, llama_seq_id seq = 0) {
    if (batch_.n_tokens >= capacity_) throw std::logic_error("batch overflow");
    const int32_t i = batch_.n_tokens++;
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = output ? 1 : 0;
  }

  int32_t size() const { return batch_.n_tokens; }
  const llama_batch& get() const { return batch_; }

 private:
  llama_batch batch_;
  int32_t capacity_;
};

// What a non-zero llama_decode result means, for error messages.
inline std::string DecodeError(int32_t code) {
  switch (code) {
    case 1: return "llama_decode found no room in the KV cache (context full)";
    case -1: return "llama_decode rejected the batch (invalid input)";
    default: return "llama_decode failed with code " + std::to_string(code);
  }
}

}  // namespace llama_oci
