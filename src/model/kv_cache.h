// The paged KV cache: fixed-size blocks of keys and values taken by a sequence as it grows and
// given back when it ends, shared by reference between sequences whose prompts start alike.
//
// A block holds kKvBlockLen consecutive positions of every layer of this rank's part (fp16 K and
// V rows of n_head_kv * head_dim values). A sequence is a block table: position p lives in
// block blocks[p / kKvBlockLen] at row p % kKvBlockLen. Blocks are reference-counted; a sequence
// that writes into a block another sequence also holds copies it first (copy on write), so a
// shared prefix is computed once and each holder's later positions stay its own.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace ranklm {

constexpr int64_t kKvBlockLen = 16;  // positions per block

// Blocks needed for n positions.
constexpr int64_t kv_blocks_for(int64_t n) { return (n + kKvBlockLen - 1) / kKvBlockLen; }

// Positions a layer holds at most for one sequence of n_ctx positions whose steps are at most
// max_step tokens: all of them, or on a sliding-window layer (window > 0) the window, one step
// and a block of slack (below).
constexpr int64_t kv_positions_held(int64_t n_ctx, int64_t window, int64_t max_step = 512) {
  return window > 0 && window + max_step + kKvBlockLen < n_ctx ? window + max_step + kKvBlockLen : n_ctx;
}

class KvPool {
 public:
  // Blocks of n_layer layers of kv_dim values each; at most max_blocks in use at once. Memory
  // is taken on a block's first use (it follows the tokens held, not the limit) and kept for
  // reuse after release.
  KvPool(int64_t n_layer, int64_t kv_dim, int64_t max_blocks);

  int32_t take();  // a block with one reference; fails when max_blocks are in use
  void retain(int32_t b);
  void release(int32_t b);
  int32_t refs(int32_t b) const { return refs_[static_cast<size_t>(b)]; }

  // Layer il's K (or V) rows of block b: [kKvBlockLen, kv_dim].
  uint16_t* k(int32_t b, int64_t il) { return data_[static_cast<size_t>(b)].get() + il * 2 * kKvBlockLen * kv_dim_; }
  uint16_t* v(int32_t b, int64_t il) { return k(b, il) + kKvBlockLen * kv_dim_; }
  void copy_block(int32_t from, int32_t to);

  int64_t kv_dim() const { return kv_dim_; }
  int64_t block_bytes() const { return n_layer_ * 2 * kKvBlockLen * kv_dim_ * 2; }
  int64_t max_blocks() const { return max_blocks_; }
  int64_t in_use() const { return in_use_; }
  int64_t peak() const { return peak_; }  // most blocks in use at once
  int64_t allocated_bytes() const { return static_cast<int64_t>(data_.size()) * block_bytes(); }

 private:
  int64_t n_layer_, kv_dim_, max_blocks_;
  std::vector<std::unique_ptr<uint16_t[]>> data_;
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;
  int64_t in_use_ = 0, peak_ = 0;
};

// The pools of a rank's KV: one for the layers that attend to every position, and one for
// sliding-window layers (null when the part has none), whose blocks a sequence gives back once
// they fall out of the window.
struct KvPools {
  std::shared_ptr<KvPool> full, windowed;
  int64_t window = 0;  // positions a windowed layer's query sees (its own included)
};

// One sequence's keys and values for positions 0 .. n_ctx-1: a block table into each pool. On
// windowed layers a block is given back (its entry set to -1) when a step starts past it: a
// query at position p reads keys p - window + 1 .. p only, so such a layer holds at most the
// window plus one step's positions, whatever the sequence's length.
class KvCache {
 public:
  KvCache(std::shared_ptr<KvPool> pool, int64_t n_ctx);
  KvCache(const KvPools& pools, int64_t n_ctx);
  ~KvCache();
  KvCache(KvCache&& o) noexcept;
  KvCache& operator=(KvCache&& o) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  int64_t n_ctx = 0;
  // Makes positions [pos0, pos0 + n) writable: takes the blocks up to there and copies any
  // block in the range that another sequence also holds; on windowed layers, first gives back
  // the blocks no query from pos0 on can see.
  void prepare(int64_t pos0, int64_t n);
  // Gives every block back (a new sequence starts from position 0).
  void clear();
  // Drops this sequence's blocks and takes, by reference, the blocks of src that hold its
  // positions 0 .. n_pos-1 (positions from n_pos on are then written into copies). With src
  // this cache itself, keeps its own first n_pos positions. On windowed layers, src must still
  // hold the window before n_pos (shareable()).
  void share_from(const KvCache& src, int64_t n_pos);
  // Whether a sequence continuing at position n_pos finds every windowed key it needs here.
  bool shareable(int64_t n_pos) const;

  const std::vector<int32_t>& blocks() const { return blocks_; }
  KvPool& pool() const { return *pool_; }
  // The windowed layers' table (-1: given back) and pool (null without windowed layers).
  const std::vector<int32_t>& windowed_blocks() const { return wblocks_; }
  KvPool* windowed_pool() const { return wpool_.get(); }

 private:
  std::shared_ptr<KvPool> pool_, wpool_;
  int64_t window_ = 0;
  std::vector<int32_t> blocks_, wblocks_;
};

}  // namespace ranklm
