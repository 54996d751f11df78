// Stop strings for streamed generation: text is released only once it can no longer be the start
// of a stop string, and generation ends at the first stop string (which is not part of the output).
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ranklm {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds decoded text; returns the part that is safe to show now.
  std::string push(const std::string& text);
  // True once a stop string was seen (push then returns only the text before it).
  bool stopped() const { return stopped_; }
  // The held-back tail at the end of generation (empty after a stop).
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

// Generated tokens into text, the one decode-then-stop-strings step of every command and of the
// server: each token decoded as it comes (an incomplete UTF-8 character held back), then through
// the stop strings (which end the text and are not part of it).
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stops) : dec_(tok), stop_(std::move(stops)) {}
  std::string push(int32_t token) { return stop_.push(dec_.push(token)); }  // text safe to show now
  bool stopped() const { return stop_.stopped(); }
  // At the end: what was held back (nothing after a stop string).
  std::string finish() {
    std::string tail = stop_.stopped() ? "" : stop_.push(dec_.flush());
    return tail + stop_.flush();
  }

 private:
  StreamDecoder dec_;
  StopMatcher stop_;
};

}  // namespace ranklm
