// The only file that includes Boost.Asio and Boost.Beast.
#include "serve/transport.h"

#include <poll.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <optional>

#include "util/error.h"

namespace ranklm::serve::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

namespace {

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// %XX escapes of a URL path decoded ("/v1/models/My%20Model"); a malformed escape stays as it is.
std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

// Sends all of `data` on a socket that may be non-blocking (Asio sets it so), waiting at most
// timeout_s for the client to take each piece. False when it cannot.
bool send_all(int fd, std::string_view data, double timeout_s) {
  const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s);
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR) return false;
  }
  return true;
}

std::string head(int status, const std::string& content_type, const std::vector<std::pair<std::string, std::string>>& extra,
                 bool keep_alive, const std::optional<size_t>& length) {
  std::string h = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\n", status, reason(status), content_type);
  for (const auto& [k, v] : extra) h += k + ": " + v + "\r\n";
  h += length ? fmt::format("Content-Length: {}\r\n", *length) : std::string("Transfer-Encoding: chunked\r\n");
  h += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return h;
}

}  // namespace

std::string Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequal(k, name)) return v;
  }
  return "";
}

bool Request::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& kv) { return iequal(kv.first, name); });
}

bool ChunkWriter::write(std::string_view data) {
  if (failed_) return false;
  if (data.empty()) return true;
  const std::string piece = fmt::format("{:x}\r\n", data.size()) + std::string(data) + "\r\n";
  failed_ = !send_all(fd_, piece, timeout_s_);
  return !failed_;
}

bool ChunkWriter::finish() {
  if (failed_) return false;
  failed_ = !send_all(fd_, "0\r\n\r\n", timeout_s_);
  return !failed_;
}

struct Server::Impl {
  struct Conn {
    explicit Conn(asio::io_context& io) : sock(io), timer(io) {}
    tcp::socket sock;
    asio::steady_timer timer;
    beast::flat_buffer buf;
    std::optional<http::request_parser<http::string_body>> parser;
    std::list<std::shared_ptr<Conn>>::iterator waiting;  // in Impl::waiting_ while reading
    bool is_waiting = false;
  };
  struct Work {
    std::shared_ptr<Conn> conn;
    Request req;
    bool keep_alive = false;
  };

  Limits lim;
  Handler handler;
  ErrorBody error_body;
  Logger logger;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread io_thread;
  std::vector<std::thread> workers;
  std::mutex m;
  std::condition_variable cv;
  std::deque<Work> queue;
  bool stopping = false;
  std::atomic<int> open{0};
  std::list<std::shared_ptr<Conn>> waiting;  // I/O thread only: connections reading a request, oldest first

  void accept() {
    auto c = std::make_shared<Conn>(io);
    acceptor.async_accept(c->sock, [this, c](beast::error_code ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) {
        ++open;
        // Over the bound: the connection that has waited longest for its request makes room.
        if (open > lim.max_connections && !waiting.empty()) close(waiting.front());
        if (open > lim.max_connections) {
          answer_error(c, 503, "the server has too many open connections; retry later");
        } else {
          read(c);
        }
      }
      accept();
    });
  }

  void unlist(const std::shared_ptr<Conn>& c) {
    if (c->is_waiting) waiting.erase(c->waiting);
    c->is_waiting = false;
  }

  void close(std::shared_ptr<Conn> c) {  // by value: c may be an element of `waiting`, erased here
    unlist(c);
    c->timer.cancel();
    beast::error_code ec;
    if (c->sock.is_open()) {
      c->sock.shutdown(tcp::socket::shutdown_both, ec);
      c->sock.close(ec);
      --open;
    }
  }

  // Reads one request with a deadline for its head and body (I/O thread).
  void read(const std::shared_ptr<Conn>& c) {
    c->parser.emplace();
    c->parser->header_limit(static_cast<std::uint32_t>(lim.max_header_bytes));
    c->parser->body_limit(lim.max_body_bytes);
    c->waiting = waiting.insert(waiting.end(), c);
    c->is_waiting = true;
    c->timer.expires_after(std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(lim.request_timeout_s)));
    c->timer.async_wait([this, c](beast::error_code ec) {
      if (!ec && c->is_waiting) close(c);  // the request did not arrive in time
    });
    http::async_read_header(c->sock, c->buf, *c->parser, [this, c](beast::error_code ec, size_t) {
      if (ec || !c->sock.is_open()) return read_done(c, ec);
      // curl sends "Expect: 100-continue" before a body over 1 KB and waits a second for it.
      const auto expect = c->parser->get()[http::field::expect];
      if (iequal(std::string_view(expect.data(), expect.size()), "100-continue")) {
        static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        beast::error_code wec;
        asio::write(c->sock, asio::buffer(kContinue), wec);
      }
      http::async_read(c->sock, c->buf, *c->parser, [this, c](beast::error_code ec2, size_t) { read_done(c, ec2); });
    });
  }

  void read_done(const std::shared_ptr<Conn>& c, beast::error_code ec) {
    {
      c->timer.cancel();
      unlist(c);
      if (!c->sock.is_open()) return;
      if (ec == http::error::body_limit) {
        return answer_error(c, 413, fmt::format("the request body is larger than the server takes ({} bytes, --max-body-bytes)",
                                                lim.max_body_bytes));
      }
      if (ec == http::error::header_limit) {
        return answer_error(c, 431, fmt::format("the request's header lines are larger than the server takes ({} bytes in all)",
                                                lim.max_header_bytes));
      }
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::operation_aborted ||
          ec == asio::error::connection_reset) {
        return close(c);
      }
      if (ec) return answer_error(c, 400, fmt::format("a malformed HTTP request: {}", ec.message()));
      const auto& msg = c->parser->get();
      Work w;
      w.conn = c;
      w.keep_alive = msg.keep_alive();
      w.req.method = std::string(msg.method_string());
      w.req.target = std::string(msg.target());
      w.req.path = percent_decode(std::string_view(w.req.target).substr(0, w.req.target.find('?')));
      for (const auto& f : msg) w.req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      w.req.body = c->parser->release().body();
      {
        std::lock_guard<std::mutex> lk(m);
        queue.push_back(std::move(w));
      }
      cv.notify_one();
    }
  }

  // An error the transport answers itself, then the connection closes (I/O thread).
  void answer_error(const std::shared_ptr<Conn>& c, int status, const std::string& message) {
    const std::string body = error_body(status, message);
    auto text = std::make_shared<std::string>(head(status, "application/json", {}, false, body.size()) + body);
    logger(Request{}, status);
    c->timer.expires_after(std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(lim.write_timeout_s)));
    c->timer.async_wait([this, c](beast::error_code ec) {
      if (!ec) close(c);
    });
    asio::async_write(c->sock, asio::buffer(*text), [this, c, text](beast::error_code, size_t) { close(c); });
  }

  void work() {
    for (;;) {
      Work w;
      {
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        w = std::move(queue.front());
        queue.pop_front();
      }
      const int fd = w.conn->sock.native_handle();
      Response res;
      handler(w.req, fd, res);
      bool ok;
      if (res.stream) {
        ok = send_all(fd, head(res.status, res.content_type, res.headers, w.keep_alive, std::nullopt), lim.write_timeout_s);
        ChunkWriter out(fd, lim.write_timeout_s);
        if (ok) res.stream(out);
        ok = ok && !out.failed();
      } else {
        ok = res.status == 499 ||  // the client has gone: nothing to write
             send_all(fd, head(res.status, res.content_type, res.headers, w.keep_alive, res.body.size()) + res.body,
                      lim.write_timeout_s);
        ok = ok && res.status != 499;
      }
      logger(w.req, res.status);
      auto c = w.conn;
      const bool again = ok && w.keep_alive;
      asio::post(io, [this, c, again] {
        if (!c->sock.is_open()) return;
        bool stop_now;
        {
          std::lock_guard<std::mutex> lk(m);
          stop_now = stopping;
        }
        if (again && !stop_now) {
          read(c);
        } else {
          close(c);
        }
      });
    }
  }
};

Server::Server(const Limits& l, Handler h, ErrorBody e, Logger log) : impl_(std::make_unique<Impl>()) {
  impl_->lim = l;
  impl_->handler = std::move(h);
  impl_->error_body = std::move(e);
  impl_->logger = std::move(log);
}

Server::~Server() { stop(); }

int Server::bind(const std::string& host, int port) {
  Impl& s = *impl_;
  beast::error_code ec;
  tcp::resolver resolver(s.io);
  const auto found = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  if (ec || found.empty()) {
    fail("cannot listen on {}:{}: {} (a host name that is not this machine's? choose with --host and --port)", host, port,
         ec ? ec.message() : "no address");
  }
  const tcp::endpoint ep = found.begin()->endpoint();
  s.acceptor.open(ep.protocol(), ec);
  // SO_REUSEADDR only: SO_REUSEPORT would let a second server bind the same port and silently
  // share its connections.
  if (!ec) s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    fail("cannot listen on {}:{}: {} (another server on that port? a host name that is not this machine's? choose "
         "with --host and --port)", host, port, ec.message());
  }
  return s.acceptor.local_endpoint().port();
}

void Server::start() {
  Impl& s = *impl_;
  s.accept();
  s.io_thread = std::thread([&s] { s.io.run(); });
  for (int i = 0; i < std::max(1, s.lim.workers); ++i) s.workers.emplace_back([&s] { s.work(); });
}

void Server::stop() {
  Impl& s = *impl_;
  if (!s.io_thread.joinable()) return;
  asio::post(s.io, [&s] {
    beast::error_code ec;
    s.acceptor.close(ec);
    while (!s.waiting.empty()) s.close(s.waiting.front());
  });
  {
    std::lock_guard<std::mutex> lk(s.m);
    s.stopping = true;
  }
  s.cv.notify_all();
  for (std::thread& t : s.workers) t.join();  // the requests being answered end first
  s.workers.clear();
  s.io.stop();
  s.io_thread.join();
}

}  // namespace ranklm::serve::net
