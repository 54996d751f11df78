#include "grammar/grammar.h"

#include <xgrammar/xgrammar.h>

#include <cmath>
#include <limits>
#include <map>
#include <mutex>

#include "util/error.h"

namespace ranklm::grammar {

namespace {

constexpr bool kAnyWhitespace = false;  // compact JSON: no free whitespace to repeat
constexpr bool kStrict = true;          // no properties or items the schema does not name

}  // namespace

std::string check_schema(const std::string& schema) {
  // A batch of a million documents asks the same schema each time: the last answers are kept.
  static std::mutex m;
  static std::map<std::string, std::string> seen;
  {
    std::lock_guard<std::mutex> lk(m);
    auto it = seen.find(schema);
    if (it != seen.end()) return it->second;
  }
  std::string why;
  try {
    xgrammar::Grammar::FromJSONSchema(schema, kAnyWhitespace, std::nullopt, std::nullopt, kStrict);
  } catch (const std::exception& e) {
    why = e.what();
    // xgrammar's messages start "[time] path/file.cc:line: "; the reason is what follows.
    const size_t at = why.find(".cc:");
    const size_t colon = at == std::string::npos ? std::string::npos : why.find(": ", at);
    if (colon != std::string::npos) why = why.substr(colon + 2);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    if (why.empty()) why = "the grammar engine refused it";
  }
  std::lock_guard<std::mutex> lk(m);
  if (seen.size() >= 64) seen.clear();
  seen.emplace(schema, why);
  return why;
}

struct Compiler::Impl {
  xgrammar::TokenizerInfo info;
  xgrammar::GrammarCompiler compiler;
  int64_t n_vocab;
  std::mutex m;
  std::map<std::string, xgrammar::CompiledGrammar> cache;
  Impl(xgrammar::TokenizerInfo i, int64_t n) : info(std::move(i)), compiler(info, 1, true), n_vocab(n) {}
};

namespace {

xgrammar::TokenizerInfo vocabulary(const Tokenizer& tok, int64_t n_vocab, const std::vector<int32_t>& end_tokens) {
  std::vector<std::string> pieces(static_cast<size_t>(tok.n_vocab()));
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    // A control token (an end of turn, a role marker) or the unknown token is no text: empty,
    // so it never matches.
    const TokenType t = tok.type(id);
    pieces[static_cast<size_t>(id)] = t == TokenType::Control || t == TokenType::Unknown ? std::string() : tok.token_to_piece(id, false);
  }
  return xgrammar::TokenizerInfo(pieces, xgrammar::VocabType::RAW, static_cast<int>(std::max<int64_t>(n_vocab, tok.n_vocab())),
                                 end_tokens, false);
}

}  // namespace

Compiler::Compiler(const Tokenizer& tok, int64_t n_vocab, const std::vector<int32_t>& end_tokens)
    : impl_(std::make_unique<Impl>(vocabulary(tok, n_vocab, end_tokens), n_vocab)) {}

Compiler::~Compiler() = default;

struct Matcher::Impl {
  xgrammar::GrammarMatcher matcher;
  std::vector<int32_t> bits;
  explicit Impl(const xgrammar::CompiledGrammar& g, int64_t n_vocab)
      : matcher(g), bits(static_cast<size_t>(xgrammar::GetBitmaskSize(static_cast<int>(n_vocab)))) {}
};

Matcher::Matcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Matcher::~Matcher() = default;

std::unique_ptr<Matcher> Compiler::start(const Spec& s) {
  const std::string key = std::to_string(static_cast<int>(s.kind)) + ":" + s.schema;
  std::lock_guard<std::mutex> lk(impl_->m);
  auto it = impl_->cache.find(key);
  if (it == impl_->cache.end()) {
    try {
      xgrammar::CompiledGrammar g = s.kind == Kind::kJsonObject
                                        ? impl_->compiler.CompileJSONSchema("{\"type\": \"object\"}", kAnyWhitespace,
                                                                            std::nullopt, std::nullopt, false)
                                        : impl_->compiler.CompileJSONSchema(s.schema, kAnyWhitespace, std::nullopt,
                                                                            std::nullopt, kStrict);
      if (impl_->cache.size() >= 256) impl_->cache.clear();  // a bound on what a server keeps
      it = impl_->cache.emplace(key, std::move(g)).first;
    } catch (const std::exception& e) {
      fail("response_format: the schema cannot be compiled: {}", e.what());
    }
  }
  return std::unique_ptr<Matcher>(new Matcher(std::make_unique<Matcher::Impl>(it->second, impl_->n_vocab)));
}

void Matcher::mask(float* logits, int64_t n_vocab) {
  DLTensor t{};
  int64_t shape[1] = {static_cast<int64_t>(impl_->bits.size())};
  t.data = impl_->bits.data();
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = 1;
  t.dtype = DLDataType{kDLInt, 32, 1};
  t.shape = shape;
  impl_->matcher.FillNextTokenBitmask(&t);
  constexpr float kOff = -std::numeric_limits<float>::infinity();
  for (int64_t w = 0; w < static_cast<int64_t>(impl_->bits.size()); ++w) {
    const uint32_t b = static_cast<uint32_t>(impl_->bits[static_cast<size_t>(w)]);
    if (b == 0xFFFFFFFFu) continue;
    for (int64_t j = 0; j < 32 && w * 32 + j < n_vocab; ++j) {
      if (!((b >> j) & 1u)) logits[w * 32 + j] = kOff;
    }
  }
}

bool Matcher::accept(int32_t token) { return impl_->matcher.AcceptToken(token); }

bool Matcher::finished() const { return impl_->matcher.IsTerminated(); }

}  // namespace ranklm::grammar
