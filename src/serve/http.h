// The HTTP side of ranklm serve (rank 0): the OpenAI routes over the transport (serve/transport.h:
// Asio, Beast's parser, a bounded worker pool). It listens from the start (so /health can say "loading"), takes requests once
// ready() gives it the model, and hands each one to the Hub as a Job; its thread then waits for
// the job and answers (whole, or as server-sent events). While it waits it watches the client's
// socket: a client that has gone is told to the hub at once, which frees the sequence's slot.
//
//   POST /v1/chat/completions   POST /v1/completions   GET /v1/models
//   GET /health (200 when every rank is ready, 503 while loading or shutting down)
//   GET /metrics (Prometheus text)
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "batch/prompts.h"
#include "chat/chat_template.h"
#include "runtime/sampler.h"
#include "serve/hub.h"
#include "tokenizer/tokenizer.h"

#include "serve/transport.h"

namespace ranklm::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;                    // non-empty: /v1/* and /metrics need "Authorization: Bearer KEY"
  size_t max_body_bytes = size_t{8} << 20;
  int threads = 64;                       // requests served at once (transport workers)
  int max_connections = 512;              // open connections; beyond, the longest-waiting one is closed
  double request_timeout_s = 30;          // a request's head and body must arrive within this
  int default_max_tokens = 0;             // 0: until the context is full
  SamplingParams sampling;                // defaults of requests that do not say
  std::vector<std::string> stops;         // default stop strings
  std::string system;                     // chat: a system message for requests without one
  bool log_requests = false;              // a line on stderr per request
};

// What the HTTP threads need of the loaded model.
struct ServedModel {
  std::string name;
  int64_t created = 0;
  int64_t n_ctx = 0;  // positions per sequence
  const Tokenizer* tok = nullptr;
  std::function<const chat::ChatTemplate&()> chat_template;  // throws when the model has none
  std::vector<int32_t> end_tokens;
};

class HttpServer {
 public:
  HttpServer(const HttpOptions& o, Hub& hub);
  ~HttpServer();

  // Binds the port (an Error naming host:port when it cannot) and starts serving.
  void start();
  int port() const { return port_; }
  // The model is loaded on every rank: requests are taken from now on.
  void ready(ServedModel m);
  // Stops accepting connections and waits for every request being answered to end.
  void stop();

 private:
  void handle(const net::Request& req, int fd, net::Response& res);
  void route(const net::Request& req, int fd, net::Response& res);
  void completion(const net::Request& req, int fd, net::Response& res, batch::Endpoint ep);
  // One job per choice (a completions request may hold several prompts); none, with the error
  // answered, when the request cannot run.
  std::vector<std::shared_ptr<Job>> make_jobs(const net::Request& req, batch::Endpoint ep, net::Response& res);
  void answer_whole(const std::vector<std::shared_ptr<Job>>& jobs, int fd, net::Response& res);
  void answer_stream(const std::shared_ptr<Job>& job, int fd, net::Response& res);
  bool authorized(const net::Request& req) const;

  HttpOptions o_;
  Hub& hub_;
  std::unique_ptr<net::Server> svr_;
  bool started_ = false;
  int port_ = 0;
  std::atomic<bool> ready_{false};
  ServedModel model_;
  std::atomic<int64_t> next_id_{1};
};

}  // namespace ranklm::serve
