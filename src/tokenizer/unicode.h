// UTF-8 helpers and the GPT-2 byte <-> printable-codepoint mapping used by byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ranklm::unicode {

// Length of the UTF-8 sequence introduced by lead byte c (1 for invalid lead bytes).
inline size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;
}

std::string codepoint_to_utf8(uint32_t cp);
// Decodes one codepoint at s[i]; advances i. Invalid bytes decode as themselves (0..255).
uint32_t next_codepoint(std::string_view s, size_t& i);

// GPT-2's reversible mapping of the 256 byte values onto printable codepoints.
const std::string& byte_to_unicode(uint8_t b);
// Inverse: codepoint -> byte, or -1 if the codepoint is not in the mapping.
int unicode_to_byte(uint32_t cp);

// Length of the longest prefix of s that is complete UTF-8 (an incomplete trailing sequence is
// held back so streamed text never splits a character).
size_t complete_utf8_prefix(std::string_view s);

// Well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), in one pass.
bool valid_utf8(std::string_view s);

}  // namespace ranklm::unicode
