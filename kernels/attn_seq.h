// The per-sequence argument of kern::attention_batch (ops.h), on its own so the SIMD kernel
// files can take it without ops.h's standard-library headers (see packed_tiles.h for why).
#pragma once

#include <cstdint>

namespace ranklm::kern {

// One sequence of a batched attention call. Its keys and values live in blocks of block_len
// positions: position j's row is k_blocks[j / block_len] + (j % block_len) * n_head_kv * head_dim
// (likewise v_blocks), so a paged cache passes its block table and a contiguous one a single
// block as long as the context.
struct AttnSeq {
  const float* q;                // [n_tok, n_head * head_dim], token t at position pos0 + t
  float* out;                    // [n_tok, n_head * head_dim]
  const uint16_t* const* k_blocks;
  const uint16_t* const* v_blocks;
  int64_t block_len;
  int64_t n_tok, pos0;           // positions 0 .. pos0 + n_tok - 1 filled
};

}  // namespace ranklm::kern
