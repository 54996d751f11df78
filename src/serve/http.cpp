#include "serve/http.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <httplib.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "batch/records.h"
#include "serve/api.h"
#include "util/error.h"
#include "util/unique_id.h"

namespace ranklm::serve {

namespace {

using namespace std::chrono_literals;
constexpr auto kPoll = 20ms;  // how often a waiting HTTP thread looks at its client's socket

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_json(e), "application/json");
}

std::string numeric_host(const sockaddr_storage& a, socklen_t len, int& port) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "";
  }
  port = std::atoi(serv);
  return host;
}

// The socket of this request's connection: cpp-httplib (0.11) does not hand it to handlers, so
// it is found among this process's descriptors by its two ends (our port, the client's address
// and port). -1 when not found (the request is then not watched). Other threads may close or
// open their connections' descriptors meanwhile (ThreadSanitizer reports the fstat as a race):
// a descriptor that changes under the scan fails a call or does not match, since no other live
// connection has this one's two ends, and this request's own descriptor stays open until its
// handler returns.
int client_socket(const httplib::Request& req, int local_port) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (const dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(d)) continue;
    struct stat st {};
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    int port = -1;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&a), &len) != 0) continue;
    numeric_host(a, len, port);
    if (port != local_port) continue;
    len = sizeof a;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&a), &len) != 0) continue;
    const std::string host = numeric_host(a, len, port);
    if (port == req.remote_port && host == req.remote_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

// True once the client has closed its end (or the connection broke). A client may send its next
// request on a kept-alive connection early: data waiting to be read is not a close.
bool client_gone(int fd) {
  if (fd < 0) return false;
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;
  if (n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

bool equal_const_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace

HttpServer::HttpServer(const HttpOptions& o, Hub& hub) : o_(o), hub_(hub), svr_(std::make_unique<httplib::Server>()) {
  routes();
}

HttpServer::~HttpServer() { stop(); }

bool HttpServer::authorized(const httplib::Request& req) const {
  if (o_.api_key.empty()) return true;
  return equal_const_time(req.get_header_value("Authorization"), "Bearer " + o_.api_key);
}

void HttpServer::routes() {
  const int threads = std::max(4, o_.threads);
  svr_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  // SO_REUSEADDR only: cpp-httplib's default also sets SO_REUSEPORT, which lets a second
  // server bind the same port and silently share its connections.
  svr_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  svr_->set_payload_max_length(o_.max_body_bytes);
  svr_->set_read_timeout(30, 0);
  svr_->set_write_timeout(30, 0);
  svr_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (guarded && !authorized(req)) {
      send_error(res, {401, "invalid_request_error",
                       req.has_header("Authorization") ? "Incorrect API key provided." :
                       "No API key provided: send \"Authorization: Bearer KEY\" (the server was started with --api-key).",
                       "", "invalid_api_key"});
      res.set_header("WWW-Authenticate", "Bearer");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      send_error(res, {413, "invalid_request_error", "the request body is larger than the server takes (--max-body-bytes)", "", ""});
    } else if (res.status == 404) {
      send_error(res, {404, "invalid_request_error", fmt::format("no route {} {}", req.method, req.path), "", "not_found"});
    } else {
      send_error(res, {res.status, res.status >= 500 ? "server_error" : "invalid_request_error",
                       fmt::format("HTTP {}", res.status), "", ""});
    }
  });
  svr_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, {500, "server_error", what, "", ""});
  });
  svr_->set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    hub_.count_status(res.status);
    if (o_.log_requests) std::fprintf(stderr, "ranklm serve: %s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
  });

  svr_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const char* status = hub_.closing() ? "shutting down" : ready_ ? "ok" : "loading";
    res.status = ready_ && !hub_.closing() ? 200 : 503;
    res.set_content(fmt::format("{{\"status\":\"{}\"}}", status), "application/json");
  });
  svr_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(hub_.metrics(2000ms)), "text/plain; version=0.0.4");
  });
  svr_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    if (!ready_) return send_error(res, {503, "server_error", "the model is loading", "", "model_loading"});
    res.set_content(models_json(model_.name, model_.created).dump(), "application/json");
  });
  svr_->Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (!ready_) return send_error(res, {503, "server_error", "the model is loading", "", "model_loading"});
    const std::string id = req.matches[1];
    if (id != model_.name) {
      return send_error(res, {404, "invalid_request_error", fmt::format("the model '{}' does not exist; this server has '{}'",
                                                                       id, model_.name), "model", "model_not_found"});
    }
    res.set_content(models_json(model_.name, model_.created)["data"][0].dump(), "application/json");
  });
  svr_->Post("/v1/chat/completions",
             [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, batch::Endpoint::kChat); });
  svr_->Post("/v1/completions",
             [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, batch::Endpoint::kCompletion); });
}

void HttpServer::start() {
  if (o_.port == 0) {
    port_ = svr_->bind_to_any_port(o_.host);
  } else {
    port_ = svr_->bind_to_port(o_.host, o_.port) ? o_.port : -1;
  }
  if (port_ <= 0) {
    fail("cannot listen on {}:{}: {} (another server on that port? a host name that is not this machine's? choose with "
         "--host and --port)", o_.host, o_.port, std::strerror(errno));
  }
  listener_ = std::thread([this] { svr_->listen_after_bind(); });
}

void HttpServer::ready(ServedModel m) {
  model_ = std::move(m);
  ready_ = true;
}

void HttpServer::stop() {
  if (!listener_.joinable()) return;
  svr_->stop();
  listener_.join();
}

std::shared_ptr<Job> HttpServer::make_job(const httplib::Request& req, batch::Endpoint ep, httplib::Response& res) {
  if (!ready_) {
    send_error(res, {503, "server_error", "the model is loading; retry when /health answers 200", "", "model_loading"});
    return nullptr;
  }
  batch::StreamOptions so;
  batch::PromptItem it = batch::parse_request_body(req.body, ep, so);
  if (!it.error.empty()) {
    send_error(res, {400, "invalid_request_error", it.error, it.error_param, ""});
    return nullptr;
  }
  auto job = std::make_shared<Job>(*model_.tok, it.o.stop.value_or(o_.stops));
  job->endpoint = ep;
  job->stream = so;
  runtime::Request& r = job->req;
  {
    std::string why, param;
    // No lock: encoding is read-only on the tokenizer and the loaded template, so a long prompt
    // being tokenized never holds up another request.
    if (!batch::prompt_ids(it, *model_.tok, model_.chat_template, o_.system, r.prompt, why, param)) {
      send_error(res, {400, "invalid_request_error", why, param, ""});
      return nullptr;
    }
  }
  const int64_t n = static_cast<int64_t>(r.prompt.size());
  if (n + 1 > model_.n_ctx) {
    send_error(res, {400, "invalid_request_error",
                     fmt::format("the prompt has {} tokens; the context holds {} with at least one generated (start the "
                                 "server with a larger --ctx-size, or shorten the prompt)", n, model_.n_ctx),
                     ep == batch::Endpoint::kChat ? "messages" : "prompt", "context_length_exceeded"});
    return nullptr;
  }
  job->id = next_id_++;
  job->public_id = unique_id(ep == batch::Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  job->created = static_cast<int64_t>(std::time(nullptr));
  const int64_t room = model_.n_ctx - n;
  int64_t max_tokens = it.o.max_tokens ? *it.o.max_tokens : o_.default_max_tokens > 0 ? o_.default_max_tokens : room;
  r.max_tokens = static_cast<int>(std::min(max_tokens, room));
  r.sampling = o_.sampling;
  apply_overrides(it.o, r.sampling);
  r.sampling.seed = it.o.seed ? *it.o.seed : batch::request_seed(o_.sampling.seed, fmt::format("request-{}", job->id));
  if (!it.o.ignore_eos) r.end_tokens = model_.end_tokens;
  return job;
}

void HttpServer::completion(const httplib::Request& req, httplib::Response& res, batch::Endpoint ep) {
  std::shared_ptr<Job> job = make_job(req, ep, res);
  if (!job) return;
  switch (hub_.submit(job)) {
    case Hub::Admit::kFull:
      res.set_header("Retry-After", "1");
      return send_error(res, {429, "rate_limit_exceeded",
                              "the server's queue is full (--max-queue requests waiting for a slot); retry later", "",
                              "rate_limit_exceeded"});
    case Hub::Admit::kClosed:
      return send_error(res, {503, "server_error", "the server is shutting down", "", ""});
    case Hub::Admit::kQueued:
      break;
  }
  const int fd = client_socket(req, port_);
  if (job->stream.stream) {
    answer_stream(job, fd, res);
  } else {
    answer_whole(job, fd, res);
  }
}

void HttpServer::answer_whole(const std::shared_ptr<Job>& job, int fd, httplib::Response& res) {
  std::unique_lock<std::mutex> lk(job->m);
  while (job->end == JobEnd::kNone) {
    job->cv.wait_for(lk, kPoll);
    if (job->end == JobEnd::kNone) {
      lk.unlock();
      hub_.check_stall();
      lk.lock();
    }
    if (job->end == JobEnd::kNone && client_gone(fd)) {
      lk.unlock();
      hub_.client_left(*job);
      lk.lock();
      job->cv.wait(lk, [&] { return job->end != JobEnd::kNone; });
      break;
    }
  }
  if (job->end == JobEnd::kCancelled) {
    res.status = 499;  // the client has gone: nothing is read
  } else if (job->end == JobEnd::kFailed) {
    send_error(res, {job->status, job->error_type, job->error, "", job->status == 400 ? "context_length_exceeded" : ""});
  } else {
    batch::Completion c;
    c.text = job->text;
    c.finish_reason = job->finish_reason;
    c.prompt_tokens = job->n_prompt;
    c.completion_tokens = job->n_completion;
    c.cached_tokens = job->n_cached;
    res.set_content(batch::completion_body(job->endpoint, job->public_id, model_.name, c, job->created)
                        .dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace),
                    "application/json");
  }
  lk.unlock();
  hub_.answered();
}

void HttpServer::answer_stream(const std::shared_ptr<Job>& job, int fd, httplib::Response& res) {
  struct State {
    size_t sent = 0;
    bool first = true, finished = false;
  };
  auto st = std::make_shared<State>();
  const std::string& id = job->public_id;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, job, fd, st, id](size_t, httplib::DataSink& sink) {
        std::unique_lock<std::mutex> lk(job->m);
        job->cv.wait_for(lk, kPoll, [&] { return job->text.size() > st->sent || job->end != JobEnd::kNone; });
        std::string out;
        const JobEnd end = job->end;
        if (job->text.size() > st->sent && end != JobEnd::kFailed) {
          out += sse(chunk_json(job->endpoint, id, model_.name, job->created, job->text.substr(st->sent), st->first, {}));
          st->sent = job->text.size();
          st->first = false;
        }
        if (end == JobEnd::kDone) {
          out += sse(chunk_json(job->endpoint, id, model_.name, job->created, "", st->first, job->finish_reason));
          if (job->stream.include_usage) {
            nlohmann::ordered_json u = chunk_json(job->endpoint, id, model_.name, job->created, "", false, {});
            u["choices"] = nlohmann::ordered_json::array();
            u["usage"] = usage_json(job->n_prompt, job->n_completion, job->n_cached);
            out += sse(u);
          }
          out += "data: [DONE]\n\n";
        } else if (end == JobEnd::kFailed) {
          out += "data: " + error_json({job->status, job->error_type, job->error, "", ""}) + "\n\n";
        }
        lk.unlock();
        if (end == JobEnd::kCancelled) return false;
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          hub_.client_left(*job);
          return false;
        }
        if (end != JobEnd::kNone) {
          st->finished = true;
          sink.done();
          return true;
        }
        if (client_gone(fd)) {
          hub_.client_left(*job);
          return false;
        }
        hub_.check_stall();
        return true;
      },
      [this, job, st](bool) {
        if (!st->finished) {
          hub_.client_left(*job);
          std::unique_lock<std::mutex> lk(job->m);
          job->cv.wait(lk, [&] { return job->end != JobEnd::kNone; });
        }
        hub_.answered();
      });
}

}  // namespace ranklm::serve
