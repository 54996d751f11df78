#include "tokenizer/tokenizer.h"

#include <cctype>
#include <cstring>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <functional>
#include <queue>
#include <set>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace ranklm {

namespace {

const char* const kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space

// Pre-tokenizer regex lists, applied in order; each splits every fragment further.
const char* const kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kCjk = "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";
// DeepSeek LLM: letters of the scripts its tokenizer.json lists, and ASCII/CJK punctuation.
const char* const kDeepseekLetters =
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+";
const char* const kDeepseekPunct = "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+";

struct PreTokenizer {
  std::vector<std::string> names;
  std::vector<std::string> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
};

const std::vector<PreTokenizer>& pre_tokenizers() {
  static const std::vector<PreTokenizer> table = {
      {{"default"},
       {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"},
       {kLlama3}, true, true},
      {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "trillion"}, {kGpt2}},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       {"\\p{N}", kGpt2}},
      {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}},
      {{"qwen2", "stablelm2", "hunyuan", "deepseek-r1-qwen"}, {kQwen2}},
      {{"deepseek-llm"},
       {"[\r\n]",
        kDeepseekLetters,
        kDeepseekPunct, "\\s+$", kCjk, "\\p{N}+"}},
      {{"deepseek-coder"}, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"}},
  };
  return table;
}

const PreTokenizer* find_pre(const std::string& name) {
  for (const auto& p : pre_tokenizers()) {
    if (std::find(p.names.begin(), p.names.end(), name) != p.names.end()) return &p;
  }
  return nullptr;
}

}  // namespace

struct Tokenizer::Regexes {
  std::vector<pcre2_code*> codes;
  ~Regexes() {
    for (auto* c : codes) pcre2_code_free(c);
  }
  // Splits every fragment by each regex in turn; matches and the gaps between them both
  // become fragments. The text's UTF-8 is checked once here: pcre2_match would otherwise check
  // the whole rest of the subject on every call, which made splitting quadratic in the length
  // (a 512 KB prompt took 30 s). Invalid UTF-8 (possible from a raw prompt) keeps PCRE2's own
  // check, which is then needed for safety.
  std::vector<std::string> split(const std::string& text) const {
    const uint32_t check = unicode::valid_utf8(text) ? PCRE2_NO_UTF_CHECK : 0;
    std::vector<std::string> frags{text};
    pcre2_match_data* md = nullptr;
    for (pcre2_code* re : codes) {
      md = pcre2_match_data_create_from_pattern(re, nullptr);
      std::vector<std::string> next;
      for (const std::string& f : frags) {
        size_t start = 0, pos = 0;
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(f.data());
        while (pos <= f.size()) {
          const int rc = pcre2_match(re, subject, f.size(), pos, check, md, nullptr);
          if (rc < 0) break;
          const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
          if (ov[1] == ov[0]) {  // empty match: step one character on
            pos = ov[0] + unicode::utf8_len(static_cast<unsigned char>(f[ov[0]]));
            continue;
          }
          if (ov[0] > start) next.push_back(f.substr(start, ov[0] - start));
          next.push_back(f.substr(ov[0], ov[1] - ov[0]));
          start = pos = ov[1];
        }
        if (start < f.size()) next.push_back(f.substr(start));
      }
      pcre2_match_data_free(md);
      frags = std::move(next);
    }
    return frags;
  }
};

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::File& f) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    t->kind_ = Kind::Spm;
    t->bos_ = 1;
    t->eos_ = 2;
    t->unk_ = 0;
    t->add_bos_ = true;
    t->add_space_prefix_ = true;
  } else if (model == "gpt2") {
    t->kind_ = Kind::Bpe;
    t->add_space_prefix_ = false;
  } else {
    fail("{}: metadata 'tokenizer.ggml.model': '{}' is not supported (supported: llama, gpt2)",
         f.path(), model);
  }
  const gguf::Value& toks = f.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING);
  const gguf::Value* scores = f.get_array_opt("tokenizer.ggml.scores", gguf::ValueType::F32);
  const gguf::Value* types = f.get_array_opt("tokenizer.ggml.token_type", gguf::ValueType::I32);
  const size_t n = toks.arr.size();
  if (n == 0) fail("{}: metadata 'tokenizer.ggml.tokens': empty vocabulary", f.path());
  if (scores && scores->arr.size() != n) {
    fail("{}: metadata 'tokenizer.ggml.scores': {} entries for {} tokens", f.path(), scores->arr.size(), n);
  }
  if (types && types->arr.size() != n) {
    fail("{}: metadata 'tokenizer.ggml.token_type': {} entries for {} tokens", f.path(), types->arr.size(), n);
  }
  t->tokens_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    Token& tk = t->tokens_[i];
    tk.text = toks.arr[i].s;
    if (scores) tk.score = static_cast<float>(scores->arr[i].f);
    if (types) {
      const auto& v = types->arr[i];
      const int64_t ty = v.is_integer() ? (v.type == gguf::ValueType::U32 || v.type == gguf::ValueType::U8 ||
                                           v.type == gguf::ValueType::U16 || v.type == gguf::ValueType::U64
                                               ? static_cast<int64_t>(v.u) : v.i)
                                        : 1;
      tk.type = (ty >= 0 && ty <= 6) ? static_cast<TokenType>(ty) : TokenType::Normal;
    }
    t->index_.emplace(tk.text, static_cast<int32_t>(i));
  }
  auto id_key = [&](const char* key, int32_t& dst) {
    if (auto v = f.get_int_opt(key)) {
      if (*v < 0 || *v >= static_cast<int64_t>(n)) {
        fail("{}: metadata '{}': token id {} outside the vocabulary (0..{})", f.path(), key, *v, n - 1);
      }
      dst = static_cast<int32_t>(*v);
    }
  };
  id_key("tokenizer.ggml.bos_token_id", t->bos_);
  id_key("tokenizer.ggml.eos_token_id", t->eos_);
  id_key("tokenizer.ggml.unknown_token_id", t->unk_);
  id_key("tokenizer.ggml.eot_token_id", t->eot_);

  if (t->kind_ == Kind::Bpe) {
    t->pre_ = f.get_string_opt("tokenizer.ggml.pre").value_or("default");
    const PreTokenizer* pre = find_pre(t->pre_);
    if (!pre) {
      std::string known;
      for (const auto& p : pre_tokenizers()) known += (known.empty() ? "" : ", ") + p.names[0];
      fail("{}: metadata 'tokenizer.ggml.pre': pre-tokenizer '{}' is not supported (supported: {})",
           f.path(), t->pre_, known);
    }
    t->ignore_merges_ = pre->ignore_merges;
    t->add_bos_ = pre->add_bos;
    t->regexes_ = std::make_unique<Regexes>();
    for (const auto& rx : pre->regexes) {
      int err = 0;
      PCRE2_SIZE off = 0;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rx.c_str()), rx.size(),
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
      if (!code) fail("pre-tokenizer '{}': regex failed to compile at offset {}", t->pre_, off);
      pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
      t->regexes_->codes.push_back(code);
    }
    const gguf::Value& merges = f.get_array("tokenizer.ggml.merges", gguf::ValueType::STRING);
    for (size_t r = 0; r < merges.arr.size(); ++r) {
      const std::string& m = merges.arr[r].s;
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) {
        fail("{}: metadata 'tokenizer.ggml.merges'[{}]: '{}' is not two tokens separated by a space",
             f.path(), r, m);
      }
      t->merges_.emplace(m, static_cast<int>(r));
    }
  }
  t->add_bos_ = f.get_bool_opt("tokenizer.ggml.add_bos_token").value_or(t->add_bos_);
  t->add_eos_ = f.get_bool_opt("tokenizer.ggml.add_eos_token").value_or(t->add_eos_);
  t->add_space_prefix_ = f.get_bool_opt("tokenizer.ggml.add_space_prefix").value_or(t->add_space_prefix_);

  if (t->eot_ < 0) {
    for (const char* s : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"}) {
      const int32_t id = t->find_token(s);
      if (id >= 0 && t->tokens_[id].type == TokenType::Control) {
        t->eot_ = id;
        break;
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const TokenType ty = t->tokens_[i].type;
    if ((ty == TokenType::Control || ty == TokenType::UserDefined || ty == TokenType::Unknown) &&
        !t->tokens_[i].text.empty()) {
      t->special_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(t->special_.begin(), t->special_.end(), [&](int32_t a, int32_t b) {
    return t->tokens_[a].text.size() > t->tokens_[b].text.size();
  });
  return t;
}

int32_t Tokenizer::find_token(const std::string& text) const {
  auto it = index_.find(text);
  return it == index_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::eog_tokens() const {
  std::vector<int32_t> out;
  for (int32_t id = 0; id < n_vocab(); ++id) {
    if (is_eog(id)) out.push_back(id);
  }
  return out;
}

bool Tokenizer::is_eog(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return false;
  if (id == eos_ || id == eot_) return true;
  const std::string& s = tokens_[id].text;
  return tokens_[id].type == TokenType::Control &&
         (s == "<|eot_id|>" || s == "<|im_end|>" || s == "<|end|>" || s == "<end_of_turn>" ||
          s == "<|endoftext|>" || s == "<|eom_id|>");
}

std::vector<Tokenizer::Fragment> Tokenizer::partition_special(const std::string& text,
                                                              bool parse_special) const {
  std::vector<Fragment> frags;
  if (!text.empty()) frags.push_back({-1, text});
  for (int32_t id : special_) {
    const TokenType ty = tokens_[id].type;
    if (!parse_special && (ty == TokenType::Control || ty == TokenType::Unknown)) continue;
    const std::string& st = tokens_[id].text;
    std::vector<Fragment> next;
    for (auto& fr : frags) {
      if (fr.token >= 0) {
        next.push_back(std::move(fr));
        continue;
      }
      size_t start = 0;
      for (size_t p = fr.text.find(st); p != std::string::npos; p = fr.text.find(st, start)) {
        if (p > start) next.push_back({-1, fr.text.substr(start, p - start)});
        next.push_back({id, {}});
        start = p + st.size();
      }
      if (start < fr.text.size()) next.push_back({-1, fr.text.substr(start)});
    }
    frags = std::move(next);
  }
  return frags;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special,
                                       bool parse_special) const {
  return encode_fragments(partition_special(text, parse_special), add_special);
}

bool Tokenizer::has_control_text(const std::string& text) const {
  for (const Fragment& fr : partition_special(text, true)) {
    if (fr.token >= 0 && tokens_[fr.token].type == TokenType::Control) return true;
  }
  return false;
}

std::vector<int32_t> Tokenizer::encode_with_literals(const std::string& text, bool add_special) const {
  std::vector<Fragment> frags;
  size_t at = 0;
  bool literal = false;
  while (at <= text.size()) {
    const size_t mark = text.find(literal ? kLiteralEnd : kLiteralBegin, at);
    const size_t end = mark == std::string::npos ? text.size() : mark;
    for (Fragment& fr : partition_special(text.substr(at, end - at), !literal)) {
      // Raw text on both sides of a marker is one piece, as if the marker were not there.
      if (fr.token < 0 && !frags.empty() && frags.back().token < 0) {
        frags.back().text += fr.text;
      } else {
        frags.push_back(std::move(fr));
      }
    }
    if (mark == std::string::npos) break;
    at = mark + std::strlen(literal ? kLiteralEnd : kLiteralBegin);
    literal = !literal;
  }
  return encode_fragments(frags, add_special);
}

std::vector<int32_t> Tokenizer::encode_fragments(const std::vector<Fragment>& frags, bool add_special) const {
  std::vector<int32_t> out;
  if (add_special && add_bos_ && bos_ >= 0) out.push_back(bos_);
  bool prev_special = true;  // SentencePiece prefixes a space at the start and after specials
  for (const Fragment& fr : frags) {
    if (fr.token >= 0) {
      out.push_back(fr.token);
      prev_special = true;
      continue;
    }
    if (kind_ == Kind::Spm) {
      std::string s = (add_space_prefix_ && prev_special) ? " " + fr.text : fr.text;
      std::string escaped;
      for (char c : s) {
        if (c == ' ') escaped += kSpace;
        else escaped += c;
      }
      encode_spm(escaped, out);
    } else {
      encode_bpe(fr.text, out);
    }
    prev_special = false;
  }
  if (add_special && add_eos_ && eos_ >= 0) out.push_back(eos_);
  return out;
}

int32_t Tokenizer::byte_token(uint8_t b) const {
  static const char* hex = "0123456789ABCDEF";
  const char buf[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
  int32_t id = find_token(buf);
  if (id < 0) id = find_token(std::string(1, static_cast<char>(b)));
  if (id < 0) id = unk_;
  return id;
}

namespace {
struct Symbol {
  size_t off;
  size_t n;
  int prev;
  int next;
};

// One symbol per UTF-8 character of text, linked as a list.
std::vector<Symbol> split_symbols(const std::string& text) {
  std::vector<Symbol> sym;
  for (size_t off = 0; off < text.size();) {
    const size_t len = std::min(unicode::utf8_len(static_cast<unsigned char>(text[off])), text.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({off, len, idx - 1, off + len == text.size() ? -1 : idx + 1});
    off += len;
  }
  return sym;
}

// Merges symbol `right` into its left neighbour `left` and unlinks it.
void merge_pair(std::vector<Symbol>& sym, int left, int right) {
  Symbol& l = sym[left];
  Symbol& r = sym[right];
  l.n += r.n;
  r.n = 0;
  l.next = r.next;
  if (r.next >= 0) sym[r.next].prev = left;
}
}  // namespace

// SentencePiece BPE: repeatedly merge the adjacent pair whose merged text is the
// highest-scoring vocabulary entry (leftmost on ties); pieces that never formed a token fall
// back to byte tokens.
void Tokenizer::encode_spm(const std::string& text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<Symbol> sym = split_symbols(text);
  struct Bigram {
    int left, right;
    float score;
    size_t size;
  };
  auto cmp = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(cmp)> q(cmp);
  std::unordered_map<std::string, std::pair<int, int>> rev_merge;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    std::string s = text.substr(sym[l].off, sym[l].n + sym[r].n);
    const int32_t id = find_token(s);
    if (id < 0) return;
    q.push({l, r, tokens_[id].score, s.size()});
    rev_merge[s] = {l, r};
  };
  for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!q.empty()) {
    const Bigram b = q.top();
    q.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;
    merge_pair(sym, b.left, b.right);
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  std::function<void(int)> resegment = [&](int i) {
    const std::string s = text.substr(sym[i].off, sym[i].n);
    const int32_t id = find_token(s);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge.find(s);
    if (it == rev_merge.end()) {
      for (char c : s) out.push_back(byte_token(static_cast<uint8_t>(c)));
      return;
    }
    resegment(it->second.first);
    resegment(it->second.second);
  };
  for (int i = 0; i != -1; i = sym[i].next) resegment(i);
}

int Tokenizer::bpe_rank(const std::string& a, const std::string& b) const {
  auto it = merges_.find(a + " " + b);
  return it == merges_.end() ? -1 : it->second;
}

// Byte-level BPE: pre-tokenize with the regexes, map bytes to printable codepoints, then merge
// the adjacent pair of lowest merge rank (leftmost on ties) until none applies.
void Tokenizer::encode_bpe(const std::string& text, std::vector<int32_t>& out) const {
  for (const std::string& raw : regexes_->split(text)) {
    std::string word;
    for (unsigned char c : raw) word += unicode::byte_to_unicode(c);
    if (ignore_merges_) {
      const int32_t id = find_token(word);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
    }
    std::vector<Symbol> sym = split_symbols(word);
    struct Bigram {
      int left, right, rank;
      std::string text;
    };
    auto cmp = [](const Bigram& a, const Bigram& b) {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    };
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(cmp)> q(cmp);
    auto piece = [&](int i) { return word.substr(sym[i].off, sym[i].n); };
    auto try_add = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      const std::string a = piece(l), b = piece(r);
      const int rank = bpe_rank(a, b);
      if (rank < 0) return;
      q.push({l, r, rank, a + b});
    };
    for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
    while (!q.empty()) {
      Bigram b = q.top();
      q.pop();
      Symbol& l = sym[b.left];
      Symbol& r = sym[b.right];
      if (l.n == 0 || r.n == 0 || piece(b.left) + piece(b.right) != b.text) continue;
      merge_pair(sym, b.left, b.right);
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }
    for (int i = 0; i != -1 && !sym.empty(); i = sym[i].next) {
      const std::string s = piece(i);
      const int32_t id = find_token(s);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      for (char c : s) {  // unknown merge result: single characters that exist
        const int32_t bid = find_token(std::string(1, c));
        if (bid >= 0) out.push_back(bid);
      }
    }
  }
}

std::string Tokenizer::token_to_piece(int32_t id, bool special) const {
  if (id < 0 || id >= n_vocab()) return {};
  const Token& t = tokens_[id];
  switch (t.type) {
    case TokenType::Control:
      return special ? t.text : std::string();
    case TokenType::Unknown:
      return special ? t.text : std::string("\xe2\x96\x85");
    case TokenType::Unused:
      return {};
    case TokenType::Byte:
      if (kind_ == Kind::Spm && t.text.size() == 6 && t.text.rfind("<0x", 0) == 0 && t.text[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t.text[3])) && std::isxdigit(static_cast<unsigned char>(t.text[4]))) {
        return std::string(1, static_cast<char>(std::stoi(t.text.substr(3, 2), nullptr, 16)));
      }
      [[fallthrough]];
    default:
      break;
  }
  if (kind_ == Kind::Spm) {
    std::string out;
    for (size_t i = 0; i < t.text.size();) {
      if (t.text.compare(i, 3, kSpace) == 0) {
        out += ' ';
        i += 3;
      } else {
        out += t.text[i++];
      }
    }
    return out;
  }
  if (t.type == TokenType::UserDefined) return t.text;
  std::string out;
  for (size_t i = 0; i < t.text.size();) {
    const uint32_t cp = unicode::next_codepoint(t.text, i);
    const int b = unicode::unicode_to_byte(cp);
    if (b >= 0) out += static_cast<char>(b);
    else out += unicode::codepoint_to_utf8(cp);
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool special) const {
  std::string out;
  for (int32_t id : ids) out += token_to_piece(id, special);
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_to_piece(id);
  const size_t n = unicode::complete_utf8_prefix(pending_);
  std::string ready = pending_.substr(0, n);
  pending_.erase(0, n);
  return ready;
}

std::string StreamDecoder::flush() {
  std::string rest = pending_.substr(0, unicode::complete_utf8_prefix(pending_));
  pending_.clear();
  return rest;
}

}  // namespace ranklm

