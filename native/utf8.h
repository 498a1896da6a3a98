// Splits a byte stream of token pieces into whole UTF-8 sequences: a character whose bytes arrive in two tokens is
// held back until it is complete, so every piece handed to JS decodes without replacement characters; and whether a
// stream of bytes ends between characters (what the grammar's token tree needs to know).
#pragma once

#include <string>

namespace llama_oci {

// Length of the sequence a lead byte starts, or 0 for a continuation or invalid byte.
inline size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 0;
}

// Bytes at the end of `text` that begin a sequence not yet complete (0 when the text ends on a boundary).
inline size_t Utf8IncompleteTail(const std::string& text) {
  const size_t n = text.size();
  // A sequence is at most 4 bytes, so its lead byte is within the last 3.
  for (size_t back = 1; back <= 3 && back <= n; back++) {
    const auto byte = static_cast<unsigned char>(text[n - back]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t want = Utf8SequenceLength(byte);
    return want > back ? back : 0;
  }
  return 0;  // only continuation bytes (invalid input): nothing to wait for
}

// Follows a stream of bytes (the texts of the tokens a grammar accepted): whether it ends between characters.
class Utf8State {
 public:
  void Push(const std::string& bytes) {
    for (const char c : bytes) {
      const auto byte = static_cast<unsigned char>(c);
      if (pending_ > 0 && (byte & 0xC0) == 0x80) {
        pending_--;
        continue;
      }
      if (pending_ > 0) valid_ = false;  // a sequence cut short
      const size_t length = Utf8SequenceLength(byte);
      if (length == 0) valid_ = false;  // a continuation byte with nothing to continue, or no UTF-8 lead byte
      pending_ = length > 1 ? length - 1 : 0;
    }
  }
  // True while the bytes so far are valid UTF-8 that ends on a character boundary.
  bool Whole() const { return valid_ && pending_ == 0; }

 private:
  size_t pending_ = 0;
  bool valid_ = true;
};

class Utf8Buffer {
 public:
  // Appends bytes and returns the longest prefix of what is buffered that ends on a character boundary.
  std::string Push(const std::string& bytes) {
    pending_ += bytes;
    const size_t keep = Utf8IncompleteTail(pending_);
    std::string out = pending_.substr(0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return out;
  }

  // Whatever is still held (an unfinished sequence at the end of generation).
  std::string Flush() {
    std::string out;
    out.swap(pending_);
    return out;
  }

 private:
  std::string pending_;
};

}  // namespace llama_oci
