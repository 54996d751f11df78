// Stop strings for streamed generation: text is released only once it can no longer be the start
// of a stop string, and generation ends at the first stop string (which is not part of the output).
#pragma once

#include <string>
#include <vector>

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

}  // namespace ranklm
