#include "comm/fake.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

namespace ranklm::comm {

struct FakeWorld::State {
  int n = 0;
  std::mutex mu;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<uint8_t>>> queues;  // (src, dst, tag)
  std::string host = "localhost";
};

namespace {

class DoneRequest : public Request::Impl {
 public:
  bool test() override { return true; }
};

class FakeRecv : public Request::Impl {
 public:
  FakeRecv(std::shared_ptr<FakeWorld::State> s, void* buf, size_t bytes, int src, int dst, Tag tag)
      : s_(std::move(s)), buf_(buf), bytes_(bytes), key_(src, dst, static_cast<int>(tag)) {}
  bool test() override {
    std::lock_guard lk(s_->mu);
    auto it = s_->queues.find(key_);
    if (it == s_->queues.end() || it->second.empty()) return false;
    std::vector<uint8_t>& m = it->second.front();
    if (m.size() != bytes_) {
      fail("rank {}: a {} of {} bytes came from rank {}, {} bytes were expected (ranks disagree on "
           "the step; a bug)", std::get<1>(key_), tag_name(static_cast<Tag>(std::get<2>(key_))), m.size(),
           std::get<0>(key_), bytes_);
    }
    if (bytes_ > 0) std::memcpy(buf_, m.data(), bytes_);
    it->second.pop_front();
    return true;
  }

 private:
  std::shared_ptr<FakeWorld::State> s_;
  void* buf_;
  size_t bytes_;
  std::tuple<int, int, int> key_;
};

class FakeComm : public Comm {
 public:
  FakeComm(std::shared_ptr<FakeWorld::State> s, int rank) : s_(std::move(s)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_->n; }
  const std::string& host(int) const override { return s_->host; }
  Request isend(const void* buf, size_t bytes, int dest, Tag tag) override {
    check_peer(dest);
    const auto* p = static_cast<const uint8_t*>(buf);
    {
      std::lock_guard lk(s_->mu);
      s_->queues[{rank_, dest, static_cast<int>(tag)}].emplace_back(p, p + bytes);
    }
    return Request(std::make_unique<DoneRequest>(), dest, tag, false);
  }
  Request irecv(void* buf, size_t bytes, int src, Tag tag) override {
    check_peer(src);
    return Request(std::make_unique<FakeRecv>(s_, buf, bytes, src, rank_, tag), src, tag, true);
  }

 protected:
  void idle() override { std::this_thread::yield(); }

 private:
  void check_peer(int r) const {
    if (r < 0 || r >= s_->n) fail("rank {}: peer rank {} is outside the world of {}", rank_, r, s_->n);
  }
  std::shared_ptr<FakeWorld::State> s_;
  int rank_;
};

}  // namespace

FakeWorld::FakeWorld(int n) : state_(std::make_shared<State>()) {
  if (n < 1) fail("a world needs at least one rank (got {})", n);
  state_->n = n;
  for (int r = 0; r < n; ++r) comms_.push_back(std::make_unique<FakeComm>(state_, r));
}

FakeWorld::~FakeWorld() = default;
int FakeWorld::size() const { return state_->n; }
Comm& FakeWorld::rank(int r) { return *comms_.at(static_cast<size_t>(r)); }

}  // namespace ranklm::comm
