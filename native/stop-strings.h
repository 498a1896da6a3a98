// Stop strings for streamed text: text that could be the start of a stop string is held back until it either
// completes the stop string (which is then cut with everything after it) or turns out to be ordinary text.
#pragma once

#include <string>
#include <vector>

namespace llama_oci {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) {
    for (auto& stop : stops) {
      if (!stop.empty()) stops_.push_back(std::move(stop));
    }
  }

  // Adds generated text; returns the text that is now safe to emit. Sets `stopped` once a stop string appeared.
  std::string Push(const std::string& text) {
    if (stopped_) return "";
    held_ += text;
    size_t cut = std::string::npos;
    for (const auto& stop : stops_) {
      const size_t at = held_.find(stop);
      if (at != std::string::npos && (cut == std::string::npos || at < cut)) cut = at;
    }
    if (cut != std::string::npos) {
      stopped_ = true;
      std::string out = held_.substr(0, cut);
      held_.clear();
      return out;
    }
    const size_t keep = LongestPartialMatch();
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }

  // The held-back text, when generation ends for another reason.
  std::string Flush() {
    std::string out;
    out.swap(held_);
    return out;
  }

  bool stopped() const { return stopped_; }

 private:
  // Length of the longest suffix of held_ that is a proper prefix of some stop string.
  size_t LongestPartialMatch() const {
    size_t best = 0;
    for (const auto& stop : stops_) {
      const size_t longest = std::min(stop.size() - 1, held_.size());
      for (size_t len = longest; len > best; len--) {
        if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
          best = len;
          break;
        }
      }
    }
    return best;
  }

  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace llama_oci
