// Copying rows that lie `stride` bytes apart (a column slice of a row-major matrix) into one
// contiguous block.
#pragma once

#include <cstdint>
#include <cstring>

namespace ranklm {

// Copies `rows` rows of `row_bytes` bytes, `stride` apart in src, to dst back to back.
inline void gather_rows(uint8_t* dst, const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t stride) {
  if (stride == row_bytes) {
    std::memcpy(dst, src, static_cast<size_t>(rows * row_bytes));
    return;
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * row_bytes, src + r * stride, static_cast<size_t>(row_bytes));
}

}  // namespace ranklm
