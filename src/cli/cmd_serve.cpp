// mpirun -np N ranklm serve --shards DIR [--host 127.0.0.1] [--port 8080]: the model behind an
// OpenAI-compatible HTTP endpoint. Rank 0 listens (serve/http.h) and drives the same
// continuous-batching scheduler as ranklm run, fed by the HTTP requests (serve/hub.h); every
// rank computes. -m M.gguf serves on one process without shards.
//
// SIGTERM or SIGINT on rank 0: no new requests (503), running ones get --shutdown-grace seconds
// to finish, then end with 503; every rank stops and the job exits 0. The other ranks ignore
// both signals (rank 0 stops them). A rank that fails ends every request in flight with 503 and
// then the job, naming the rank and host, as batch jobs do.
#include <csignal>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <thread>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/engine.h"
#include "cli/options.h"
#include "comm/mpi.h"
#include "runtime/scheduler.h"
#include "serve/http.h"
#include "serve/hub.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ranklm::cli {

namespace {

std::atomic<bool> g_stop{false};
// Set with g_stop when the launcher started the stop: Ctrl-C reaches mpirun too (the terminal
// signals the whole process group), and a SIGTERM from our parent is mpirun's own. mpirun then
// kills the job odls_base_sigkill_timeout seconds later.
std::atomic<bool> g_launcher_stop{false};
bool g_under_launcher = false;
char g_stop_note[512] = "ranklm serve: stop signal: no new requests are taken\n";

// The first SIGTERM or SIGINT starts the graceful stop; further SIGTERMs are the same request
// again (a job script and the launcher may both send one); a second Ctrl-C (SIGINT) stops now.
extern "C" void on_stop_signal(int sig, siginfo_t* info, void*) {
  if (g_under_launcher && (sig == SIGINT || (info && info->si_pid == getppid()))) g_launcher_stop = true;
  if (g_stop.exchange(true)) {
    if (sig == SIGINT) {
      std::signal(sig, SIG_DFL);
      std::raise(sig);
    }
    return;
  }
  const ssize_t n = ::write(STDERR_FILENO, g_stop_note, std::strlen(g_stop_note));  // async-signal-safe
  (void)n;
}

struct ServeOptions {
  ModelSource src;
  PayloadOptions payloads;
  serve::HttpOptions http;
  serve::HubLimits limits;
  std::string template_path, model_name, ready_file;
  int threads = 1, parallel = 8, ctx = 4096, http_threads = 0;
  int64_t prefill_chunk = 256;
  double grace_s = 30;
  bool no_prefix_sharing = false;
};

void add_serve_options(po::options_description& desc, ServeOptions& o) {
  serve::HttpOptions& h = o.http;
  desc.add_options()
      ("host", po::value(&h.host)->default_value("127.0.0.1"), "address to listen on (0.0.0.0: every interface)")
      ("port", po::value(&h.port)->default_value(8080), "TCP port (0: any free port, printed at start)")
      ("api-key", po::value(&h.api_key), "require \"Authorization: Bearer KEY\" on /v1/* and /metrics (default: $RANKLM_API_KEY)")
      ("parallel", po::value(&o.parallel)->default_value(8), "sequences in flight (KV slots)")
      ("max-queue", po::value(&o.limits.max_queue)->default_value(64), "requests waiting for a slot; more get 429")
      ("max-body-bytes", po::value(&h.max_body_bytes)->default_value(size_t{8} << 20), "largest request body (413 beyond)")
      ("http-threads", po::value(&o.http_threads)->default_value(0),
       "requests served at once, once read whole (0: --parallel + --max-queue + 8)")
      ("max-connections", po::value(&h.max_connections)->default_value(512),
       "open connections; beyond, the one waiting longest for its request is closed")
      ("request-timeout", po::value(&h.request_timeout_s)->default_value(30.0, "30"),
       "seconds a request's head and body may take to arrive (a slow client is closed after it)")
      ("max-tokens,n", po::value(&h.default_max_tokens)->default_value(0),
       "max_tokens of requests that do not say (0: until the context is full)")
      ("stop", po::value(&h.stops)->composing(), "default stop string (repeatable)")
      ("system", po::value(&h.system), "chat requests: a system message (unless the request has its own)")
      ("chat-template", po::value(&o.template_path), "Jinja file to use instead of the model's template")
      ("model-name", po::value(&o.model_name), "the model's id in /v1/models and responses (default: general.name)")
      ("prefill-chunk", po::value(&o.prefill_chunk)->default_value(256), "prompt tokens per sequence per step")
      ("no-prefix-sharing", po::bool_switch(&o.no_prefix_sharing), "compute every prompt whole")
      ("shutdown-grace", po::value(&o.grace_s)->default_value(30.0),
       "seconds running requests may take to finish after SIGTERM")
      ("ready-file", po::value(&o.ready_file), "write \"URL PID\" here once every rank is ready (for job scripts)")
      ("log-requests", po::bool_switch(&h.log_requests), "one line on stderr per request");
}

void check_serve_options(ServeOptions& o) {
  if (o.http.api_key.empty()) {
    if (const char* k = std::getenv("RANKLM_API_KEY")) o.http.api_key = k;
  }
  if (o.http.port < 0 || o.http.port > 65535) usage_fail("--port: {} is not a TCP port (0..65535)", o.http.port);
  if (o.parallel < 1 || o.parallel > kMaxParallel) usage_fail("--parallel: {} must be in 1..{}", o.parallel, kMaxParallel);
  if (o.ctx < 2 || o.ctx > kMaxContext) usage_fail("--ctx-size: {} must be in 2..{}", o.ctx, kMaxContext);
  if (o.limits.max_queue < 0) usage_fail("--max-queue: {} must be >= 0", o.limits.max_queue);
  if (o.http.max_body_bytes < 1024) usage_fail("--max-body-bytes: {} is too small (at least 1024)", o.http.max_body_bytes);
  if (o.http.default_max_tokens < 0) usage_fail("--max-tokens: {} must be >= 0", o.http.default_max_tokens);
  if (o.prefill_chunk < 1) usage_fail("--prefill-chunk: {} must be >= 1", o.prefill_chunk);
  if (!(o.grace_s >= 0) || o.grace_s > 86400) usage_fail("--shutdown-grace: {} must be in 0..86400 seconds", o.grace_s);
  if (o.http_threads < 0 || o.http_threads > 4096) usage_fail("--http-threads: {} must be in 0..4096", o.http_threads);
  if (o.http.max_connections < 8 || o.http.max_connections > 1000000) {
    usage_fail("--max-connections: {} must be in 8..1000000", o.http.max_connections);
  }
  if (!(o.http.request_timeout_s >= 0.1 && o.http.request_timeout_s <= 3600)) {
    usage_fail("--request-timeout: {} must be in 0.1..3600 seconds", o.http.request_timeout_s);
  }
  check_sampling(o.http.sampling);
  o.http.threads = o.http_threads > 0 ? o.http_threads : o.parallel + o.limits.max_queue + 8;
  o.limits.grace = std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
}

// Stop signals on rank 0; the message it prints at once says what happens next.
void install_stop_signals(const ServeOptions& o, serve::Hub& hub) {
  g_under_launcher = comm::launched_by_mpi();
  double kill_after = 1.0;  // Open MPI's default odls_base_sigkill_timeout
  if (const char* v = std::getenv("OMPI_MCA_odls_base_sigkill_timeout")) kill_after = std::atof(v);
  const auto window = std::chrono::milliseconds(static_cast<int64_t>(std::max(0.0, kill_after - 0.6) * 1000));
  hub.set_stop_flag(&g_stop);
  if (g_under_launcher) hub.set_launcher_stop(&g_launcher_stop, window);
  std::snprintf(g_stop_note, sizeof g_stop_note,
                "ranklm serve: stop signal: no new requests are taken; running ones get %.0f s (%s); a second Ctrl-C "
                "stops at once\n", o.grace_s,
                g_under_launcher ? "a Ctrl-C to mpirun ends them sooner, with an error, since mpirun kills the job "
                                   "odls_base_sigkill_timeout seconds later"
                                 : "--shutdown-grace");
  struct sigaction sa {};
  sa.sa_sigaction = on_stop_signal;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

// Rank 0 once every rank is ready: serves until SIGTERM, then stops the other ranks.
int drive(const ServeOptions& o, Engine& engine, serve::Hub& hub, serve::HttpServer& http) {
  runtime::Executor& ex = engine.exec();
  auto tok = Tokenizer::from_gguf(engine.meta());
  chat::LazyChatTemplate tmpl(engine.meta(), *tok, o.template_path);
  serve::ServedModel m;
  m.name = o.model_name.empty() ? engine.meta().get_string_opt("general.name").value_or("ranklm") : o.model_name;
  m.created = static_cast<int64_t>(std::time(nullptr));
  m.n_ctx = ex.n_ctx();
  m.tok = tok.get();
  // Called from any HTTP worker (the template loads once under its own lock).
  m.chat_template = [&]() -> const chat::ChatTemplate& { return tmpl.get(); };
  m.end_tokens = tok->eog_tokens();
  hub.attach(&ex);
  http.ready(m);
  const std::string url = fmt::format("http://{}:{}", o.http.host, http.port());
  std::fprintf(stderr, "ranklm serve: ready at %s/v1 (model %s, %d ranks, %d slots of %lld positions)\n", url.c_str(),
               m.name.c_str(), engine.plan().world_size, ex.n_slots(), static_cast<long long>(ex.n_ctx()));
  if (!o.ready_file.empty()) {
    std::ofstream f(o.ready_file + ".tmp");
    f << url << ' ' << getpid() << '\n';
    f.close();
    if (!f || std::rename((o.ready_file + ".tmp").c_str(), o.ready_file.c_str()) != 0) {
      fail("--ready-file: cannot write {}", o.ready_file);
    }
  }
  runtime::SchedulerOptions so;
  so.n_micro = static_cast<int>(engine.plan().stages.size());
  so.prefill_chunk = o.prefill_chunk;
  so.share_prefixes = !o.no_prefix_sharing;
  try {
    runtime::Scheduler(ex, so).run(hub);
  } catch (const std::exception& e) {
    // A rank failed: every request in flight is answered 503 before the job ends.
    hub.fail_all(503, fmt::format("the server failed: {}", e.what()));
    for (int i = 0; i < 100 && hub.unanswered() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    throw;
  }
  http.stop();
  // Every slot gives back its blocks; the pool must then be empty (nothing leaked).
  for (int s = 0; s < ex.n_slots(); ++s) ex.share_kv(s, s, 0);
  ex.gather_times();
  const runtime::KvStats kv = ex.kv_stats();
  std::fprintf(stderr, "ranklm serve: stopped; %lld KV blocks in use on rank 0\n", static_cast<long long>(kv.in_use));
  ex.stop();
  if (!o.ready_file.empty()) std::remove(o.ready_file.c_str());
  return kExitOk;
}

}  // namespace

int cmd_serve(const std::vector<std::string>& args) {
  po::options_description desc("serve options");
  ServeOptions o;
  o.threads = default_threads();
  add_source_options(desc, o.src);
  add_rank_options(desc, o.threads, o.payloads, default_threads());
  add_serve_options(desc, o);
  add_sampling_options(desc, o.http.sampling, "default ");
  add_context_option(desc, o.ctx, 4096, "context (KV positions) per sequence: prompt + completion");
  po::variables_map vm;
  if (!parse_options("serve", "(--shards DIR | -m M.gguf) [--host 127.0.0.1] [--port 8080] [options]", desc, args, vm)) {
    return kExitOk;
  }
  o.src.check();
  check_serve_options(o);
  o.threads = usable_threads(o.threads, default_threads());
  const comm::Payloads z = parse_payloads(o.payloads);

  return with_world("serve", [&](comm::World& world) {
    comm::Comm& c = world.comm();
    o.src.check(c.size());
    std::unique_ptr<serve::Hub> hub;
    std::unique_ptr<serve::HttpServer> http;
    if (c.rank() == 0) {
      hub = std::make_unique<serve::Hub>(o.limits);
      install_stop_signals(o, *hub);
      http = std::make_unique<serve::HttpServer>(o.http, *hub);
      http->start();  // /health answers "loading" while the ranks load
      std::fprintf(stderr, "ranklm serve: listening on http://%s:%d (loading the model)\n", o.http.host.c_str(), http->port());
    } else {
      std::signal(SIGTERM, SIG_IGN);
      std::signal(SIGINT, SIG_IGN);
    }
    auto engine = load_engine(world, o.src, o.threads);
    engine->start(o.parallel, o.ctx, z);
    if (!engine->drives()) {
      engine->exec().serve();
      return kExitOk;
    }
    return drive(o, *engine, *hub, *http);
  });
}

}  // namespace ranklm::cli
