#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "util/error.h"

namespace ranklm {

KvPool::KvPool(int64_t n_layer, int64_t kv_dim, int64_t max_blocks)
    : n_layer_(n_layer), kv_dim_(kv_dim), max_blocks_(max_blocks) {
  if (n_layer < 0 || kv_dim <= 0 || max_blocks < 1 || max_blocks > INT32_MAX) {
    fail("KV pool: {} blocks of {} layers x {} values is not a pool (a bug)", max_blocks, n_layer, kv_dim);
  }
}

int32_t KvPool::take() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (static_cast<int64_t>(data_.size()) < max_blocks_) {
    const size_t n = static_cast<size_t>(block_bytes() / 2);
    data_.push_back(std::make_unique<uint16_t[]>(n));  // zeroed: never-written rows read as 0
    refs_.push_back(0);
    b = static_cast<int32_t>(data_.size() - 1);
  } else {
    fail("KV cache full: all {} blocks of {} positions are in use (a bug: the scheduler admits sequences only "
         "while their blocks are free)", max_blocks_, kKvBlockLen);
  }
  refs_[static_cast<size_t>(b)] = 1;
  peak_ = std::max(peak_, ++in_use_);
  return b;
}

void KvPool::retain(int32_t b) { ++refs_[static_cast<size_t>(b)]; }

void KvPool::release(int32_t b) {
  int32_t& r = refs_[static_cast<size_t>(b)];
  if (r <= 0) fail("KV pool: block {} released more often than taken (a bug)", b);
  if (--r == 0) {
    free_.push_back(b);
    --in_use_;
  }
}

void KvPool::copy_block(int32_t from, int32_t to) {
  std::memcpy(data_[static_cast<size_t>(to)].get(), data_[static_cast<size_t>(from)].get(),
              static_cast<size_t>(block_bytes()));
}

KvCache::KvCache(std::shared_ptr<KvPool> pool, int64_t n_ctx_) : n_ctx(n_ctx_), pool_(std::move(pool)) {}

KvCache::KvCache(const KvPools& pools, int64_t n_ctx_)
    : n_ctx(n_ctx_), pool_(pools.full), wpool_(pools.windowed), window_(pools.windowed ? pools.window : 0) {
  if (wpool_ && window_ < 1) fail("KV cache: windowed layers with a window of {} positions (a bug)", window_);
}

KvCache::~KvCache() { clear(); }

KvCache::KvCache(KvCache&& o) noexcept
    : n_ctx(o.n_ctx), pool_(std::move(o.pool_)), wpool_(std::move(o.wpool_)), window_(o.window_),
      blocks_(std::move(o.blocks_)), wblocks_(std::move(o.wblocks_)) {
  o.blocks_.clear();
  o.wblocks_.clear();
}

KvCache& KvCache::operator=(KvCache&& o) noexcept {
  if (this != &o) {
    clear();
    n_ctx = o.n_ctx;
    pool_ = std::move(o.pool_);
    wpool_ = std::move(o.wpool_);
    window_ = o.window_;
    blocks_ = std::move(o.blocks_);
    wblocks_ = std::move(o.wblocks_);
    o.blocks_.clear();
    o.wblocks_.clear();
  }
  return *this;
}

namespace {

void release_all(KvPool* pool, std::vector<int32_t>& table) {
  if (pool) {
    for (int32_t b : table) {
      if (b >= 0) pool->release(b);
    }
  }
  table.clear();
}

// Blocks [first, last] of the table writable (copies of shared ones), the table grown to last.
void make_writable(KvPool& pool, std::vector<int32_t>& table, int64_t first, int64_t last) {
  for (int64_t i = first; i <= last && i < static_cast<int64_t>(table.size()); ++i) {
    int32_t& b = table[static_cast<size_t>(i)];
    if (b >= 0 && pool.refs(b) > 1) {  // shared: this sequence writes into its own copy
      const int32_t copy = pool.take();
      pool.copy_block(b, copy);
      pool.release(b);
      b = copy;
    } else if (b < 0) {
      b = pool.take();  // a windowed block given back and written again (a rewind)
    }
  }
  while (static_cast<int64_t>(table.size()) <= last) table.push_back(pool.take());
}

}  // namespace

void KvCache::clear() {
  release_all(pool_.get(), blocks_);
  release_all(wpool_.get(), wblocks_);
}

void KvCache::prepare(int64_t pos0, int64_t n) {
  if (n <= 0) return;
  const int64_t first = pos0 / kKvBlockLen, last = (pos0 + n - 1) / kKvBlockLen;
  make_writable(*pool_, blocks_, first, last);
  if (!wpool_) return;
  // Keys before pos0 - window + 1 are out of every query's window from here on.
  const int64_t keep_from = pos0 - window_ + 1;
  for (int64_t i = 0; i < static_cast<int64_t>(wblocks_.size()) && (i + 1) * kKvBlockLen <= keep_from; ++i) {
    int32_t& b = wblocks_[static_cast<size_t>(i)];
    if (b >= 0) wpool_->release(b);
    b = -1;
  }
  make_writable(*wpool_, wblocks_, first, last);
}

bool KvCache::shareable(int64_t n_pos) const {
  if (!wpool_ || n_pos <= 0) return true;
  const int64_t from = std::max<int64_t>(0, n_pos - window_ + 1) / kKvBlockLen;
  const int64_t to = kv_blocks_for(n_pos);
  for (int64_t i = from; i < to; ++i) {
    if (i >= static_cast<int64_t>(wblocks_.size()) || wblocks_[static_cast<size_t>(i)] < 0) return false;
  }
  return true;
}

void KvCache::share_from(const KvCache& src, int64_t n_pos) {
  if (src.pool_ != pool_ || src.wpool_ != wpool_) fail("KV cache: sharing between two pools (a bug)");
  const int64_t n = kv_blocks_for(n_pos);
  if (n_pos < 0 || n > static_cast<int64_t>(src.blocks_.size()) || n_pos > n_ctx) {
    fail("KV cache: sharing {} positions of a sequence that holds {} blocks (a bug)", n_pos, src.blocks_.size());
  }
  if (!src.shareable(n_pos)) {
    fail("KV cache: sharing {} positions of a sequence whose windowed layers no longer hold the window before them "
         "(a bug: the scheduler checks this)", n_pos);
  }
  if (&src == this) {  // keeps its own first n_pos positions
    for (size_t i = static_cast<size_t>(n); i < blocks_.size(); ++i) pool_->release(blocks_[i]);
    blocks_.resize(static_cast<size_t>(n));
    if (wpool_) {
      for (size_t i = static_cast<size_t>(n); i < wblocks_.size(); ++i) {
        if (wblocks_[i] >= 0) wpool_->release(wblocks_[i]);
      }
      wblocks_.resize(std::min(wblocks_.size(), static_cast<size_t>(n)));
    }
    return;
  }
  clear();
  blocks_.assign(src.blocks_.begin(), src.blocks_.begin() + n);
  for (int32_t b : blocks_) pool_->retain(b);
  if (wpool_) {
    wblocks_.assign(src.wblocks_.begin(), src.wblocks_.begin() + std::min<int64_t>(n, static_cast<int64_t>(src.wblocks_.size())));
    for (int32_t b : wblocks_) {
      if (b >= 0) wpool_->retain(b);
    }
  }
}

}  // namespace ranklm
