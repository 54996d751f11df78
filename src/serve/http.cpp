#include "serve/http.h"

#include <sys/socket.h>

#include <fmt/format.h>

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

void send_error(net::Response& res, const ApiError& e) {
  res.status = e.status;
  res.content_type = "application/json";
  res.body = error_json(e);
}

void set_json(net::Response& res, std::string body, const char* type = "application/json") {
  res.content_type = type;
  res.body = std::move(body);
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

HttpServer::HttpServer(const HttpOptions& o, Hub& hub) : o_(o), hub_(hub) {
  net::Limits l;
  l.max_body_bytes = o_.max_body_bytes;
  l.max_connections = o_.max_connections;
  l.request_timeout_s = o_.request_timeout_s;
  l.workers = std::max(4, o_.threads);
  svr_ = std::make_unique<net::Server>(
      l, [this](const net::Request& req, int fd, net::Response& res) { handle(req, fd, res); },
      [](int status, const std::string& message) {
        return error_json({status, status >= 500 ? "server_error" : "invalid_request_error", message, "", ""});
      },
      [this](const net::Request& req, int status) {
        hub_.count_status(status);
        if (o_.log_requests) std::fprintf(stderr, "ranklm serve: %s %s %d\n", req.method.c_str(), req.path.c_str(), status);
      });
}

HttpServer::~HttpServer() { stop(); }

bool HttpServer::authorized(const net::Request& req) const {
  if (o_.api_key.empty()) return true;
  return equal_const_time(req.header("Authorization"), "Bearer " + o_.api_key);
}

// Every request, on a transport worker: the API key, then the route. Exceptions become 500s.
void HttpServer::handle(const net::Request& req, int fd, net::Response& res) {
  try {
    const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics" || req.path == "/tokenize" ||
                         req.path == "/detokenize" || req.path == "/tokenizer_info";
    if (guarded && !authorized(req)) {
      send_error(res, {401, "invalid_request_error",
                       req.has_header("Authorization") ? "Incorrect API key provided." :
                       "No API key provided: send \"Authorization: Bearer KEY\" (the server was started with --api-key).",
                       "", "invalid_api_key"});
      res.headers.emplace_back("WWW-Authenticate", "Bearer");
      return;
    }
    route(req, fd, res);
  } catch (const std::exception& e) {
    res.stream = nullptr;
    send_error(res, {500, "server_error", e.what(), "", ""});
  }
}

void HttpServer::route(const net::Request& req, int fd, net::Response& res) {
  const bool get = req.method == "GET", post = req.method == "POST";
  if (get && req.path == "/health") {
    const char* status = hub_.closing() ? "shutting down" : ready_ ? "ok" : "loading";
    res.status = ready_ && !hub_.closing() ? 200 : 503;
    return set_json(res, fmt::format("{{\"status\":\"{}\"}}", status));
  }
  if (get && req.path == "/metrics") return set_json(res, metrics_text(hub_.metrics(2000ms)), "text/plain; version=0.0.4");
  if (get && (req.path == "/v1/models" || req.path.rfind("/v1/models/", 0) == 0)) {
    if (!ready_) return send_error(res, {503, "server_error", "the model is loading", "", "model_loading"});
    if (req.path == "/v1/models") return set_json(res, models_json(model_.name, model_.created).dump());
    const std::string id = req.path.substr(std::string("/v1/models/").size());
    if (id != model_.name) {
      return send_error(res, {404, "invalid_request_error", fmt::format("the model '{}' does not exist; this server has '{}'",
                                                                       id, model_.name), "model", "model_not_found"});
    }
    return set_json(res, models_json(model_.name, model_.created)["data"][0].dump());
  }
  const bool tokenizer_route = (post && (req.path == "/tokenize" || req.path == "/detokenize")) ||
                               (get && req.path == "/tokenizer_info");
  if (tokenizer_route) {
    if (!ready_) return send_error(res, {503, "server_error", "the model is loading", "", "model_loading"});
    const TokenizerView v{*model_.tok, model_.chat_template, model_.n_ctx};
    try {
      const nlohmann::ordered_json j = req.path == "/tokenize"     ? tokenize_json(req.body, v)
                                       : req.path == "/detokenize" ? detokenize_json(req.body, v)
                                                                   : tokenizer_info_json(v);
      return set_json(res, j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
  }
  if (post && req.path == "/v1/chat/completions") return completion(req, fd, res, batch::Endpoint::kChat);
  if (post && req.path == "/v1/completions") return completion(req, fd, res, batch::Endpoint::kCompletion);
  send_error(res, {404, "invalid_request_error", fmt::format("no route {} {}", req.method, req.path), "", "not_found"});
}

void HttpServer::start() {
  port_ = svr_->bind(o_.host, o_.port);
  svr_->start();
  started_ = true;
}

void HttpServer::ready(ServedModel m) {
  model_ = std::move(m);
  ready_ = true;
}

void HttpServer::stop() {
  if (!started_) return;
  started_ = false;
  svr_->stop();
}

std::vector<std::shared_ptr<Job>> HttpServer::make_jobs(const net::Request& req, batch::Endpoint ep, net::Response& res) {
  if (!ready_) {
    send_error(res, {503, "server_error", "the model is loading; retry when /health answers 200", "", "model_loading"});
    return {};
  }
  batch::StreamOptions so;
  auto it = std::make_shared<batch::PromptItem>(batch::parse_request_body(req.body, ep, so));
  if (!it->error.empty()) {
    send_error(res, {400, "invalid_request_error", it->error, it->error_param, ""});
    return {};
  }
  const std::string public_id = unique_id(ep == batch::Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  std::vector<std::shared_ptr<Job>> jobs;
  for (size_t k = 0; k < it->n_choices(); ++k) {
    auto job = std::make_shared<Job>(*model_.tok, it->o.stop.value_or(o_.stops));
    job->endpoint = ep;
    job->stream = so;
    job->item = it;
    job->choice = k;
    runtime::Request& r = job->req;
    job->id = next_id_++;
    std::string why, param;
    // No lock: encoding is read-only on the tokenizer and the loaded template, so a long prompt
    // being tokenized never holds up another request. The token limit is settled below.
    const RequestDefaults defaults{*model_.tok, model_.chat_template, o_.system, o_.sampling, model_.end_tokens, 0};
    if (!to_request(*it, k, defaults, fmt::format("request-{}", job->id), r, why, param)) {
      send_error(res, {400, "invalid_request_error", why, param, ""});
      return {};
    }
    const int64_t n = static_cast<int64_t>(r.prompt.size());
    if (n + 1 > model_.n_ctx) {
      send_error(res, {400, "invalid_request_error",
                       fmt::format("the prompt has {} tokens; the context holds {} with at least one generated (start the "
                                   "server with a larger --ctx-size, or shorten the prompt)", n, model_.n_ctx),
                       ep == batch::Endpoint::kChat ? "messages" : "prompt", "context_length_exceeded"});
      return {};
    }
    job->public_id = public_id;
    job->created = created;
    const int64_t room = model_.n_ctx - n;
    int64_t max_tokens = it->o.max_tokens ? *it->o.max_tokens : o_.default_max_tokens > 0 ? o_.default_max_tokens : room;
    r.max_tokens = static_cast<int>(std::min(max_tokens, room));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

void HttpServer::completion(const net::Request& req, int fd, net::Response& res, batch::Endpoint ep) {
  std::vector<std::shared_ptr<Job>> jobs = make_jobs(req, ep, res);
  if (jobs.empty()) return;
  for (size_t k = 0; k < jobs.size(); ++k) {
    const Hub::Admit a = hub_.submit(jobs[k]);
    if (a == Hub::Admit::kQueued) continue;
    // The choices already queued leave (their slots freed at the scheduler's next pass).
    for (size_t j = 0; j < k; ++j) hub_.client_left(*jobs[j]);
    for (size_t j = 0; j < k; ++j) {
      std::unique_lock<std::mutex> lk(jobs[j]->m);
      jobs[j]->cv.wait(lk, [&] { return jobs[j]->end != JobEnd::kNone; });
      lk.unlock();
      hub_.answered();
    }
    if (a == Hub::Admit::kFull) {
      res.headers.emplace_back("Retry-After", "1");
      return send_error(res, {429, "rate_limit_exceeded",
                              "the server's queue is full (--max-queue requests waiting for a slot); retry later", "",
                              "rate_limit_exceeded"});
    }
    return send_error(res, {503, "server_error", "the server is shutting down", "", ""});
  }
  if (jobs[0]->stream.stream) {
    answer_stream(jobs[0], fd, res);
  } else {
    answer_whole(jobs, fd, res);
  }
}

void HttpServer::answer_whole(const std::vector<std::shared_ptr<Job>>& jobs, int fd, net::Response& res) {
  bool left = false;
  for (const std::shared_ptr<Job>& job : jobs) {
    std::unique_lock<std::mutex> lk(job->m);
    while (job->end == JobEnd::kNone) {
      job->cv.wait_for(lk, kPoll);
      if (job->end == JobEnd::kNone) {
        lk.unlock();
        hub_.check_stall();
        lk.lock();
      }
      if (job->end == JobEnd::kNone && (left || client_gone(fd))) {
        left = true;
        lk.unlock();
        hub_.client_left(*job);
        lk.lock();
        job->cv.wait(lk, [&] { return job->end != JobEnd::kNone; });
        break;
      }
    }
  }
  std::vector<batch::Completion> choices;
  for (const std::shared_ptr<Job>& job : jobs) {
    std::lock_guard<std::mutex> lk(job->m);
    if (job->end == JobEnd::kCancelled) {
      res.status = 499;  // the client has gone: nothing is read
      break;
    }
    if (job->end == JobEnd::kFailed) {
      send_error(res, {job->status, job->error_type, job->error, "", job->status == 400 ? "context_length_exceeded" : ""});
      break;
    }
    const ChoiceTokens ct{job->req.prompt, job->tokens, job->prompt_logprobs, job->logprobs};
    batch::Completion c;
    c.text = echo_text(*job->item, job->choice, *model_.tok, ct.prompt) + job->text;
    c.finish_reason = job->finish_reason;
    c.prompt_tokens = job->n_prompt;
    c.completion_tokens = job->n_completion;
    c.cached_tokens = job->n_cached;
    c.logprobs = choice_logprobs(*job->item, *model_.tok, ct);
    choices.push_back(std::move(c));
  }
  if (choices.size() == jobs.size()) {
    set_json(res, batch::completion_body(jobs[0]->endpoint, jobs[0]->public_id, model_.name, choices, jobs[0]->created)
                      .dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  }
  for (size_t k = 0; k < jobs.size(); ++k) hub_.answered();
}

// Server-sent events: the text as it comes, the finish reason, the usage when asked, [DONE]. A
// client that has gone (a failed write, or its socket closed while waiting) leaves its request.
void HttpServer::answer_stream(const std::shared_ptr<Job>& job, int fd, net::Response& res) {
  res.content_type = "text/event-stream";
  res.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
  res.stream = [this, job, fd](net::ChunkWriter& out) {
    size_t sent = 0;
    bool first = true;
    auto last_probe = std::chrono::steady_clock::time_point{};
    for (;;) {
      std::unique_lock<std::mutex> lk(job->m);
      job->cv.wait_for(lk, kPoll, [&] { return job->text.size() > sent || job->end != JobEnd::kNone; });
      std::string piece;
      const JobEnd end = job->end;
      if (job->text.size() > sent && end != JobEnd::kFailed) {
        piece += sse(chunk_json(job->endpoint, job->public_id, model_.name, job->created, job->text.substr(sent), first, {}));
        sent = job->text.size();
        first = false;
      }
      if (end == JobEnd::kDone) {
        piece += sse(chunk_json(job->endpoint, job->public_id, model_.name, job->created, "", first, job->finish_reason));
        if (job->stream.include_usage) {
          nlohmann::ordered_json u = chunk_json(job->endpoint, job->public_id, model_.name, job->created, "", false, {});
          u["choices"] = nlohmann::ordered_json::array();
          u["usage"] = usage_json(job->n_prompt, job->n_completion, job->n_cached);
          piece += sse(u);
        }
        piece += "data: [DONE]\n\n";
      } else if (end == JobEnd::kFailed) {
        piece += "data: " + error_json({job->status, job->error_type, job->error, "", ""}) + "\n\n";
      }
      lk.unlock();
      if (end == JobEnd::kCancelled) break;
      if (!piece.empty() && !out.write(piece)) {
        hub_.client_left(*job);
        break;
      }
      if (end != JobEnd::kNone) {
        out.finish();
        break;
      }
      // The end of the client's input is a close or only a half-close (shutdown(SHUT_WR)); a
      // stream can tell them apart: an SSE comment (ignored by clients) reaches a half-closed
      // client, and a second one fails on a closed socket. So a stream ends only then.
      if (client_gone(fd) && std::chrono::steady_clock::now() - last_probe > 100ms) {
        last_probe = std::chrono::steady_clock::now();
        if (!out.write(": \n\n")) {
          hub_.client_left(*job);
          break;
        }
      }
      hub_.check_stall();
    }
    // A request left mid-way ends (its slot freed) before the worker takes the next one.
    std::unique_lock<std::mutex> lk(job->m);
    job->cv.wait(lk, [&] { return job->end != JobEnd::kNone; });
    lk.unlock();
    hub_.answered();
  };
}

}  // namespace ranklm::serve
