#include "token-tree.h"

#include <cmath>
#include <unordered_map>

namespace llama_oci {

namespace {

// Whether `text` is whole, valid UTF-8 characters (what a grammar reads as a complete string of code points).
bool WholeUtf8(const std::string& text) {
  Utf8State state;
  state.Push(text);
  return state.Whole();
}

std::string Piece(const llama_vocab* vocab, llama_token id) {
  std::string out(16, '\0');
  int32_t n = llama_token_to_piece(vocab, id, out.data(), static_cast<int32_t>(out.size()), 0, true);
  if (n < 0) {
    out.resize(static_cast<size_t>(-n));
    n = llama_token_to_piece(vocab, id, out.data(), static_cast<int32_t>(out.size()), 0, true);
  }
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

}  // namespace

TokenTree::TokenTree(const llama_vocab* vocab) {
  const int32_t n = llama_vocab_n_tokens(vocab);
  pieces_.resize(static_cast<size_t>(n));
  parent_.assign(static_cast<size_t>(n), -1);
  std::unordered_map<std::string, llama_token> parents;
  parents.reserve(static_cast<size_t>(n));
  for (llama_token id = 0; id < n; id++) {
    pieces_[id] = Piece(vocab, id);
    const std::string& text = pieces_[id];
    // A grammar decides end-of-generation tokens by its state, not by their text; empty texts are always rejected.
    if (llama_vocab_is_eog(vocab, id) || text.empty() || text[0] == '\0' || !WholeUtf8(text)) continue;
    parents.emplace(text, id);  // of several tokens with one text, any stands for all
  }
  std::vector<int32_t> depth(static_cast<size_t>(n), -1);
  for (llama_token id = 0; id < n; id++) {
    if (llama_vocab_is_eog(vocab, id)) continue;
    const std::string& text = pieces_[id];
    for (size_t length = text.size(); length-- > 1;) {
      const auto found = parents.find(text.substr(0, length));
      if (found != parents.end() && found->second != id) {
        parent_[id] = found->second;
        break;
      }
    }
  }
  // Depth by following parents (a parent's text is shorter, so the chains end).
  for (llama_token id = 0; id < n; id++) {
    std::vector<llama_token> chain;
    llama_token at = id;
    while (at >= 0 && depth[at] < 0) {
      chain.push_back(at);
      at = parent_[at];
    }
    int32_t d = at >= 0 ? depth[at] : -1;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) depth[*it] = ++d;
  }
  for (llama_token id = 0; id < n; id++) {
    const auto d = static_cast<size_t>(depth[id]);
    if (levels_.size() <= d) levels_.resize(d + 1);
    levels_[d].push_back(id);
  }
}

void ConstrainWithTree(const TokenTree& tree, llama_sampler* grammar, llama_token_data_array& candidates,
                       TreeScratch& scratch) {
  enum : uint8_t { kUnknown = 0, kAllowed = 1, kRejected = 2 };
  // Each grammar call costs about as much as checking thousands of tokens (it walks every grammar stack), so the
  // first levels go one call each, and everything deeper goes in one last call, judged by its ancestor at the last
  // of those levels (the levels in between are checked along, not used to skip).
  constexpr size_t kLevelCalls = 3;
  const auto& levels = tree.levels();
  scratch.verdict.assign(static_cast<size_t>(tree.size()), kUnknown);
  const auto check = [&](std::vector<llama_token_data>& batch) {
    if (batch.empty()) return;
    llama_token_data_array array = {batch.data(), batch.size(), -1, false};
    llama_sampler_apply(grammar, &array);
    for (const llama_token_data& token : batch) {
      scratch.verdict[token.id] = std::isinf(token.logit) && token.logit < 0 ? kRejected : kAllowed;
    }
  };
  for (size_t d = 0; d < levels.size() && d < kLevelCalls; d++) {
    scratch.batch.clear();
    for (const llama_token id : levels[d]) {
      const llama_token parent = tree.parent(id);
      if (parent >= 0 && scratch.verdict[parent] == kRejected) {
        scratch.verdict[id] = kRejected;
      } else {
        scratch.batch.push_back({id, 0.0f, 0.0f});
      }
    }
    check(scratch.batch);
  }
  scratch.batch.clear();
  for (size_t d = kLevelCalls; d < levels.size(); d++) {
    for (const llama_token id : levels[d]) {
      llama_token ancestor = tree.parent(id);
      while (scratch.verdict[ancestor] == kUnknown) ancestor = tree.parent(ancestor);
      if (scratch.verdict[ancestor] == kRejected) {
        scratch.verdict[id] = kRejected;
      } else {
        scratch.batch.push_back({id, 0.0f, 0.0f});
      }
    }
  }
  check(scratch.batch);
  for (size_t i = 0; i < candidates.size; i++) {
    llama_token_data& token = candidates.data[i];
    if (scratch.verdict[static_cast<size_t>(token.id)] == kRejected) token.logit = -INFINITY;
  }
}

}  // namespace llama_oci
