// Tokenizer built from GGUF metadata: SentencePiece-style ("llama": score-ordered merges with
// byte fallback) and byte-level BPE ("gpt2": the pre-tokenizer regexes named by
// tokenizer.ggml.pre, run by PCRE2, then rank-ordered merges). Special tokens, BOS/EOS, and
// detokenization with UTF-8 held back across token boundaries.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/gguf.h"

namespace ranklm {

enum class TokenType : int32_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

class Tokenizer {
 public:
  enum class Kind { Spm, Bpe };

  static std::unique_ptr<Tokenizer> from_gguf(const gguf::File& f);
  ~Tokenizer();

  // add_special: BOS/EOS as the vocabulary asks. parse_special: match control tokens written in
  // the text (user-defined tokens are always matched).
  std::vector<int32_t> encode(const std::string& text, bool add_special, bool parse_special) const;

  // Whether text holds the text of a control token (<|im_start|>, <|eot_id|>, ...).
  bool has_control_text(const std::string& text) const;
  // Encodes text in which the parts between kLiteralBegin and kLiteralEnd are literal: control-
  // token texts there stay text (a user's message cannot open a turn of its own); the rest is
  // encoded as encode(text, add_special, true). The markers themselves are dropped.
  static constexpr const char* kLiteralBegin = "\xEF\xB7\x90";  // U+FDD0, a noncharacter
  static constexpr const char* kLiteralEnd = "\xEF\xB7\x91";    // U+FDD1
  std::vector<int32_t> encode_with_literals(const std::string& text, bool add_special) const;

  // Bytes of one token (special tokens render only when `special`).
  std::string token_to_piece(int32_t id, bool special = false) const;
  // Whole sequence to text.
  std::string decode(const std::vector<int32_t>& ids, bool special = false) const;

  int32_t n_vocab() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t eot() const { return eot_; }
  bool add_bos() const { return add_bos_; }
  bool is_eog(int32_t id) const;  // end of generation (EOS, EOT, and the like)
  std::vector<int32_t> eog_tokens() const;  // every id is_eog holds for
  const std::string& token_text(int32_t id) const { return tokens_.at(id).text; }
  TokenType type(int32_t id) const { return tokens_.at(id).type; }
  int32_t find_token(const std::string& text) const;  // -1 when absent
  Kind kind() const { return kind_; }
  const std::string& pre() const { return pre_; }

 private:
  struct Token {
    std::string text;
    float score = 0.0f;
    TokenType type = TokenType::Normal;
  };
  struct Fragment {
    int32_t token;      // >= 0: a special token; -1: raw text
    std::string text;
  };

  Tokenizer() = default;
  std::vector<Fragment> partition_special(const std::string& text, bool parse_special) const;
  std::vector<int32_t> encode_fragments(const std::vector<Fragment>& frags, bool add_special) const;
  void encode_spm(const std::string& text, std::vector<int32_t>& out) const;
  void encode_bpe(const std::string& text, std::vector<int32_t>& out) const;
  int32_t byte_token(uint8_t b) const;
  int bpe_rank(const std::string& a, const std::string& b) const;

  Kind kind_ = Kind::Spm;
  std::string pre_;
  std::vector<Token> tokens_;
  std::unordered_map<std::string, int32_t> index_;
  std::unordered_map<std::string, int> merges_;  // "left right" -> rank
  std::vector<int32_t> special_;                 // control/user-defined ids, longest text first
  int32_t bos_ = -1, eos_ = -1, eot_ = -1, unk_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = true, ignore_merges_ = false;
  struct Regexes;
  std::unique_ptr<Regexes> regexes_;  // BPE pre-tokenizer, compiled once
};

// Accumulates token bytes and releases only complete UTF-8, so a character split across two
// tokens is printed whole.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);  // text that became complete
  // At the end: what remains, less an incomplete UTF-8 character at the end (a token limit cut
  // it off); that is held back for good, never sent as bytes a JSON writer would turn into U+FFFD.
  std::string flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;
};

}  // namespace ranklm
