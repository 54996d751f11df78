// Structured output: a request's response_format as a grammar over the model's tokens. The
// JSON schema becomes a grammar, the grammar a token mask per step, through xgrammar (its
// converter, compiler and matcher; docs/DEPENDENCIES.md). Output is compact JSON (no free
// whitespace, which small models can repeat without end); a schema is followed strictly (no
// properties or items it does not name).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ranklm::grammar {

enum class Kind : int32_t {
  kNone = 0,
  kJsonObject = 1,  // any JSON object
  kJsonSchema = 2,  // a document the schema validates
};

struct Spec {
  Kind kind = Kind::kNone;
  std::string schema;  // kJsonSchema: the schema's JSON text
  bool active() const { return kind != Kind::kNone; }
};

// Whether the schema turns into a grammar (a pattern that is no regular expression, a $ref that
// leads nowhere, a range with nothing in it, ...): empty when it does, else the reason. Needs
// no vocabulary; rank 0 checks every request with it before the head rank compiles it.
std::string check_schema(const std::string& schema);

class Matcher;

// The model's vocabulary as the grammar engine takes it (each token's bytes; control tokens
// never match text; `end_tokens` may end a finished document), and the grammars compiled over
// it, cached by spec (the same schema again costs nothing).
class Compiler {
 public:
  Compiler(const Tokenizer& tok, int64_t n_vocab, const std::vector<int32_t>& end_tokens);
  ~Compiler();
  // A matcher at the start of a document of `s` (active). Throws ranklm::Error naming why.
  std::unique_ptr<Matcher> start(const Spec& s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One sequence's place in its grammar.
class Matcher {
 public:
  ~Matcher();
  // Sets the logits of the tokens the grammar does not allow next to -infinity (row of n_vocab).
  void mask(float* logits, int64_t n_vocab);
  // The token chosen next; false when the grammar refuses it.
  bool accept(int32_t token);
  // The document is complete and an end token was accepted.
  bool finished() const;

 private:
  friend class Compiler;
  struct Impl;
  explicit Matcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ranklm::grammar
