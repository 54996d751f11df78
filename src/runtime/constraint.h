// What a sequence may sample next, beyond the sampler's settings: structured output (a JSON
// schema's grammar). The head rank asks its factory for one per request that has a spec and
// masks that sequence's logits before sampling; the runtime does not know what the grammar is
// (the engine provides the factory: grammar/grammar.h through xgrammar).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace ranklm::runtime {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets the logits of the tokens not allowed next to -infinity (a row of n_vocab).
  virtual void mask(float* logits, int64_t n_vocab) = 0;
  // The token sampled; false when the constraint refuses it.
  virtual bool accept(int32_t token) = 0;
};

class ConstraintFactory {
 public:
  virtual ~ConstraintFactory() = default;
  // A constraint at its start for spec `spec` of kind `kind` (> 0). Throws ranklm::Error when
  // the spec cannot be used.
  virtual std::unique_ptr<TokenConstraint> make(int32_t kind, const std::string& spec) = 0;
};

}  // namespace ranklm::runtime
