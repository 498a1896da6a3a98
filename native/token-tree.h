// TokenTree: a vocabulary's tokens arranged by their text, each under the longest other token whose text is a
// proper prefix of its own, so that a grammar can be checked against the whole vocabulary without checking every
// token: a grammar that rejects a text rejects every text that starts with it, so the tokens under a rejected one are
// rejected without being looked at. Built once per model (ModelHandle::Tokens), read by any thread.
//
// ConstrainWithTree gives exactly what llama_sampler_apply(grammar, candidates) gives for a grammar that sees whole
// characters (no UTF-8 sequence left open by the tokens it accepted so far): the rejected tokens get -inf, the others
// keep their logits. It checks the first levels of the tree one grammar call each (a token whose parent was rejected
// is rejected unchecked), then every deeper token whose ancestor at the last of those levels passed, in one call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llama.h"
#include "utf8.h"

namespace llama_oci {

class TokenTree {
 public:
  explicit TokenTree(const llama_vocab* vocab);
  TokenTree(const TokenTree&) = delete;
  TokenTree& operator=(const TokenTree&) = delete;

  int32_t size() const { return static_cast<int32_t>(parent_.size()); }
  // The token whose text is the longest proper prefix of this one's, or -1 (end-of-generation tokens, tokens with no
  // text, and tokens whose text is not whole UTF-8 characters are never parents).
  llama_token parent(llama_token id) const { return parent_[static_cast<size_t>(id)]; }
  // Tokens by depth: levels()[0] has no parent; a token of level d has its parent in level d-1.
  const std::vector<std::vector<llama_token>>& levels() const { return levels_; }
  // The token's text as llama.cpp's grammar sees it (its piece with special tokens spelled out).
  const std::string& piece(llama_token id) const { return pieces_[static_cast<size_t>(id)]; }

 private:
  std::vector<llama_token> parent_;
  std::vector<std::vector<llama_token>> levels_;
  std::vector<std::string> pieces_;
};

// Scratch space of ConstrainWithTree, kept by its caller between calls.
struct TreeScratch {
  std::vector<uint8_t> verdict;
  std::vector<llama_token_data> batch;
};

// Sets the logit of every token of `candidates` that `grammar` rejects to -inf. `candidates` holds the whole
// vocabulary in token order (candidates[i].id == i).
void ConstrainWithTree(const TokenTree& tree, llama_sampler* grammar, llama_token_data_array& candidates,
                       TreeScratch& scratch);

}  // namespace llama_oci
