// HTTP/1.1 connections of ranklm serve, on Boost.Asio with Boost.Beast's parser: one I/O thread
// accepts connections and reads requests asynchronously, so a connection that has not sent a
// whole request holds no thread; a complete request goes to a bounded pool of workers, which
// run the handler (tokenize, queue, wait for the model) and write the answer.
//
// Bounds on what a client can hold: the request head (all header lines together) has at most
// max_header_bytes (431 beyond), the body max_body_bytes whether sent with Content-Length or
// chunked (413 beyond), and both must arrive within request_timeout_s of the connection's turn
// to read (or the connection is closed: a client that sends a byte every few seconds cannot
// keep it). At most max_connections connections are open; a new one beyond that closes the
// connection that has been waiting longest for its request, so slow or idle connections cannot
// lock out new clients. The body's Content-Type is not looked at (the API is JSON whatever
// curl -d says).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace ranklm::serve::net {

struct Request {
  std::string method, target, path, body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string header(std::string_view name) const;  // case-insensitive; "" when absent
  bool has_header(std::string_view name) const;
};

// Writes a chunked body piece by piece (server-sent events). write() and finish() return false
// once the client cannot be written to (it has gone, or stopped reading for write_timeout_s).
class ChunkWriter {
 public:
  ChunkWriter(int fd, double timeout_s) : fd_(fd), timeout_s_(timeout_s) {}
  bool write(std::string_view data);
  bool finish();
  bool failed() const { return failed_; }

 private:
  int fd_;
  double timeout_s_;
  bool failed_ = false;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json", body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set: the body is sent chunked by this function (on the worker's thread) instead of `body`.
  std::function<void(ChunkWriter&)> stream;
};

struct Limits {
  size_t max_body_bytes = size_t{8} << 20;
  size_t max_header_bytes = size_t{64} << 10;
  double request_timeout_s = 30;  // the whole head and body of a request
  double write_timeout_s = 30;    // a client that reads nothing for this long is dropped
  int max_connections = 512;
  int workers = 64;
};

// Runs on a worker thread; fd is the client's socket, to watch for the client leaving.
using Handler = std::function<void(const Request&, int fd, Response&)>;
// The JSON body of an error the transport answers itself (413, 431, 400, 503).
using ErrorBody = std::function<std::string(int status, const std::string& message)>;
// After each response (status counting, the request log).
using Logger = std::function<void(const Request&, int status)>;

class Server {
 public:
  Server(const Limits& l, Handler h, ErrorBody e, Logger log);
  ~Server();
  // Binds host:port (0: any free port) and returns the port; an Error naming host:port when it
  // cannot.
  int bind(const std::string& host, int port);
  void start();
  // Stops accepting, lets the requests being answered finish, closes the rest, joins.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ranklm::serve::net
