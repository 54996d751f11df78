// Batch-job inputs and outputs: prompt files (text and OpenAI Batch JSONL) with every kind of
// bad line turned into that line's error, the fatal cases, the results file's resume rules,
// and the record shapes.
#include <gtest/gtest.h>

#include <tuple>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <random>
#include <sstream>

#include "batch/progress.h"
#include "batch/prompts.h"
#include "batch/records.h"
#include "batch/results.h"
#include "test_util.h"
#include "util/error.h"
#include "util/read_file.h"

using namespace ranklm;
using namespace ranklm::batch;
using nlohmann::json;

namespace {

std::vector<PromptItem> parse(const std::string& s, PromptFormat f = PromptFormat::kJsonl, bool chat = false) {
  return parse_prompts(s, "p.jsonl", f, chat);
}

std::string fatal(const std::string& s, PromptFormat f = PromptFormat::kJsonl) {
  return test::error_message_of<Error>([&] { parse(s, f); });
}

// The error of a one-line JSONL file.
std::string line_error(const std::string& line) {
  const auto items = parse(line + "\n");
  EXPECT_EQ(items.size(), 1u);
  return items.at(0).error;
}

// A results file opened for a job on prompts "p" and model "m", ready for records.
std::unique_ptr<ResultsFile> open_results(const std::string& path, bool resume, const std::string& prompts = "p",
                                          const std::string& model = "m", bool force = false) {
  ResultsOptions o;
  o.resume = resume;
  o.force_resume = force;
  auto r = std::make_unique<ResultsFile>(path, o);
  r->begin(JobIdentity::of_prompts("prompts.txt", prompts, "model", model));
  return r;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(Prompts, TextLinesAreNumberedPromptsAndBlankLinesAreSkipped) {
  const auto items = parse_prompts("Hello there\n\n  \r\nSecond line\r\nthird", "p.txt", PromptFormat::kAuto, false);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].custom_id, "1");
  EXPECT_EQ(items[0].prompts.at(0).text, "Hello there");
  EXPECT_EQ(items[0].endpoint, Endpoint::kCompletion);
  EXPECT_EQ(items[1].custom_id, "4");
  EXPECT_EQ(items[1].prompts.at(0).text, "Second line");  // the \r of a CRLF file is not part of the prompt
  EXPECT_EQ(items[2].custom_id, "5");
  EXPECT_EQ(items[2].line, 5);
  const auto chat = parse_prompts("Why is the sky blue?\n", "p.txt", PromptFormat::kText, true);
  ASSERT_EQ(chat[0].messages.size(), 1u);
  EXPECT_EQ(chat[0].endpoint, Endpoint::kChat);
  EXPECT_EQ(chat[0].messages[0].role, "user");
  EXPECT_EQ(chat[0].messages[0].content, "Why is the sky blue?");
}

TEST(Prompts, TextLinesThatAreNotUtf8AreErrorsAndTheRestRuns) {
  const std::string s = std::string("good\nbad \xff\xfe here\nnul \0 inside\noverlong \xc0\xaf\ncafé ok\n", 51);
  const auto items = parse_prompts(s, "p.txt", PromptFormat::kText, false);
  ASSERT_EQ(items.size(), 5u);
  EXPECT_TRUE(items[0].error.empty());
  EXPECT_NE(items[1].error.find("p.txt: line 2: not UTF-8 text"), std::string::npos) << items[1].error;
  EXPECT_NE(items[2].error.find("line 3"), std::string::npos);
  EXPECT_NE(items[3].error.find("line 4"), std::string::npos);
  EXPECT_TRUE(items[4].error.empty()) << items[4].error;
  EXPECT_EQ(items[4].prompts.at(0).text, "café ok");
}

TEST(Prompts, JsonlChatAndCompletionRequestsWithTheirSettings) {
  const auto items = parse(
      R"({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "x", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}], "max_tokens": 12, "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": "\n", "user": "ignored"}})"
      "\n"
      R"({"custom_id": "b", "url": "/v1/completions", "body": {"prompt": "Once upon", "stop": ["END", "."], "max_completion_tokens": 3, "seed": -1}})"
      "\n"
      R"({"custom_id": "c", "url": "/v1/completions", "body": {"prompt": [1, 15043, 29892]}})"
      "\n");
  ASSERT_EQ(items.size(), 3u);
  for (const auto& it : items) EXPECT_TRUE(it.error.empty()) << it.error;
  EXPECT_EQ(items[0].endpoint, Endpoint::kChat);
  ASSERT_EQ(items[0].messages.size(), 2u);
  EXPECT_EQ(items[0].messages[1].content, "Hi there");
  EXPECT_EQ(*items[0].o.max_tokens, 12);
  EXPECT_FLOAT_EQ(*items[0].o.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*items[0].o.top_p, 0.9f);
  EXPECT_EQ(*items[0].o.seed, 7u);
  EXPECT_EQ(*items[0].o.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(items[1].prompts.at(0).text, "Once upon");
  EXPECT_EQ(*items[1].o.max_tokens, 3);
  EXPECT_EQ(*items[1].o.seed, UINT64_MAX);
  EXPECT_EQ(items[1].o.stop->size(), 2u);
  EXPECT_FALSE(items[1].o.temperature.has_value());
  EXPECT_EQ(items[2].prompts.at(0).ids, (std::vector<int32_t>{1, 15043, 29892}));
}

// Log-probabilities, echo, scoring (max_tokens 0) and lists of prompts (lm-eval's shape).
TEST(Prompts, LogprobsEchoAndListsOfPromptsAreRead) {
  StreamOptions so;
  PromptItem it = parse_request_body(R"({"prompt": [[1, 2, 3], [1, 2, 4]], "echo": true, "logprobs": 5, "max_tokens": 0})",
                                     Endpoint::kCompletion, so);
  ASSERT_TRUE(it.error.empty()) << it.error;
  ASSERT_EQ(it.n_choices(), 2u);
  EXPECT_EQ(it.prompts[1].ids, (std::vector<int32_t>{1, 2, 4}));
  EXPECT_TRUE(it.o.echo);
  EXPECT_EQ(it.o.logprobs, 5);
  EXPECT_EQ(*it.o.max_tokens, 0);
  it = parse_request_body(R"({"prompt": ["a b", "c"], "logprobs": 0})", Endpoint::kCompletion, so);
  ASSERT_TRUE(it.error.empty()) << it.error;
  EXPECT_EQ(it.prompts[0].text, "a b");
  EXPECT_EQ(it.prompts[1].text, "c");
  EXPECT_EQ(it.o.logprobs, 0);
  EXPECT_FALSE(it.o.echo);
  it = parse_request_body(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 20})",
                          Endpoint::kChat, so);
  ASSERT_TRUE(it.error.empty()) << it.error;
  EXPECT_EQ(it.o.logprobs, 20);
  EXPECT_EQ(it.n_choices(), 1u);
  it = parse_request_body(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": false, "echo": false})", Endpoint::kChat, so);
  ASSERT_TRUE(it.error.empty()) << it.error;
  EXPECT_EQ(it.o.logprobs, -1);
  std::string many = R"({"prompt": [)";
  for (size_t i = 0; i <= kMaxPrompts; ++i) many += i ? ",\"p\"" : "\"p\"";
  it = parse_request_body(many + "]}", Endpoint::kCompletion, so);
  EXPECT_NE(it.error.find("prompts; at most 4096"), std::string::npos) << it.error;
}

// An HTTP request body (ranklm serve): the batch body's fields plus stream, stream_options and
// ignore_eos; errors name the field as the API does (no "body." prefix).
TEST(Prompts, ARequestBodyOfTheServerWithStreamingAndItsErrorsNamingTheField) {
  StreamOptions so;
  PromptItem it = parse_request_body(
      R"({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": true, "stream_options": {"include_usage": true}, "max_completion_tokens": 9, "ignore_eos": true, "seed": 5})",
      Endpoint::kChat, so);
  EXPECT_TRUE(it.error.empty()) << it.error;
  EXPECT_TRUE(so.stream);
  EXPECT_TRUE(so.include_usage);
  EXPECT_TRUE(it.o.ignore_eos);
  EXPECT_EQ(*it.o.max_tokens, 9);
  EXPECT_EQ(*it.o.seed, 5u);
  ASSERT_EQ(it.messages.size(), 1u);
  EXPECT_EQ(it.messages[0].content, "Hi");
  so = {};
  it = parse_request_body(R"({"prompt": [3, 4]})", Endpoint::kCompletion, so);
  EXPECT_TRUE(it.error.empty() && !so.stream && !it.o.ignore_eos);
  EXPECT_EQ(it.prompts.at(0).ids, (std::vector<int32_t>{3, 4}));
  const std::vector<std::tuple<std::string, Endpoint, std::string, std::string>> bad = {
      {R"({"prompt": "x", "stream": 1})", Endpoint::kCompletion, "stream", "stream must be a boolean"},
      {R"({"prompt": "x", "stream_options": []})", Endpoint::kCompletion, "stream_options", "must be an object"},
      {R"({"prompt": "x", "stream_options": {"include_usage": "yes"}})", Endpoint::kCompletion,
       "stream_options.include_usage", "must be a boolean"},
      {R"({"prompt": "x", "ignore_eos": 0})", Endpoint::kCompletion, "ignore_eos", "must be a boolean"},
      {R"({"prompt": "x", "model": 7})", Endpoint::kCompletion, "model", "must be a string"},
      {R"({"prompt": "x", "top_p": 0})", Endpoint::kCompletion, "top_p", "outside (0, 1]"},
      {R"({"messages": "hi"})", Endpoint::kChat, "messages", "non-empty array"},
      {R"({"prompt": "x"})", Endpoint::kChat, "messages", "is missing"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", Endpoint::kCompletion, "prompt", "is missing"},
      {R"({"prompt": "x",)", Endpoint::kCompletion, "", "not valid JSON"},
      {"\xff\xfe", Endpoint::kCompletion, "", "not UTF-8"},
      {R"({"prompt": "x", "stream": true, "logprobs": 1})", Endpoint::kCompletion, "logprobs", "with stream is not supported"},
      {R"({"prompt": ["x", "y"], "stream": true})", Endpoint::kCompletion, "prompt", "streaming takes one"},
      {R"({"prompt": "x", "stream": true, "echo": true})", Endpoint::kCompletion, "echo", "with stream is not supported"},
  };
  for (const auto& [body, ep, param, what] : bad) {
    so = {};
    it = parse_request_body(body, ep, so);
    EXPECT_EQ(it.error_param, param) << body;
    EXPECT_NE(it.error.find(what), std::string::npos) << body << " -> " << it.error;
    EXPECT_EQ(it.error.find("body."), std::string::npos) << it.error;
    EXPECT_TRUE(it.messages.empty() && it.prompts.empty());
  }
}

TEST(Prompts, EveryBadJsonlLineIsThatLinesErrorNamingTheField) {
  const std::string ok_body = R"("url": "/v1/completions", "body": {"prompt": "x"})";
  struct Case {
    std::string line, want, param;
  };
  const std::vector<Case> cases = {
      {R"({"custom_id": "a", )", "not valid JSON", ""},
      {R"(["custom_id", "a"])", "the line must be a JSON object (got an array", "the line"},
      {"{" + ok_body + "}", "custom_id is missing", "custom_id"},
      {R"({"custom_id": 5, )" + ok_body + "}", "custom_id must be a non-empty string (got a number 5)", "custom_id"},
      {R"({"custom_id": "a", "method": "GET", )" + ok_body + "}", "method must be \"POST\"", "method"},
      {R"({"custom_id": "a", "body": {"prompt": "x"}})", "url is missing", "url"},
      {R"({"custom_id": "a", "url": "/v1/embeddings", "body": {"input": "x"}})", "url '/v1/embeddings' is not served", "url"},
      {R"({"custom_id": "a", "url": "/v1/completions"})", "body is missing", "body"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": "x"})", "body must be an object", "body"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {}})", "body.prompt is missing", "body.prompt"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": {"t": 1}}})", "body.prompt must be a string", "body.prompt"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": ""}})", "body.prompt is empty", "body.prompt"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": []}})", "body.messages must be a non-empty array", "body.messages"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"prompt": "x"}})", "body.messages is missing", "body.messages"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "king", "content": "x"}]}})", "body.messages[0].role is 'king'", "body.messages[0].role"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user"}]}})", "body.messages[0].content is missing", "body.messages[0].content"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": 3}]}})", "body.messages[0].content must be a string or an array of text parts (got a number 3)", "body.messages[0].content"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}})", "this model reads text only", "body.messages[0].content[0]"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "temperature": "hot"}})", "body.temperature must be a number (got a string \"hot\")", "body.temperature"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "temperature": 7}})", "body.temperature is 7, outside [0, 2]", "body.temperature"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "top_p": 0}})", "body.top_p is 0, outside (0, 1]", "body.top_p"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": 2.5}})", "body.max_tokens must be an integer", "body.max_tokens"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}})", "body.max_tokens is 0, outside 1..16777216", "body.max_tokens"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": 99999999}})", "body.max_tokens is 99999999, outside 0..16777216", "body.max_tokens"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "logprobs": 21}})", "body.logprobs is 21, outside 0..20", "body.logprobs"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "logprobs": true}})", "body.logprobs must be an integer in 0..20", "body.logprobs"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}})", "body.top_logprobs is 21, outside 0..20", "body.top_logprobs"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}})", "body.top_logprobs needs body.logprobs set to true", "body.top_logprobs"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "logprobs": 3}})", "body.logprobs must be a boolean", "body.logprobs"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "echo": true}})", "body.echo is not a field of /v1/chat/completions", "body.echo"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": ["x", 5]}})", "body.prompt[1] must be a string or a non-empty array of token ids", "body.prompt[1]"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": [[1, 2], []]}})", "body.prompt[1] must be a string or a non-empty array of token ids", "body.prompt[1]"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": ["x", ""]}})", "body.prompt[1] is empty", "body.prompt"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "echo": "yes"}})", "body.echo must be a boolean", "body.echo"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}})", "body.response_format.type is 'xml'", "body.response_format.type"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "not": {}}}}}})", "keyword 'not' (at #) is not supported", "body.response_format.json_schema.schema"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "n"}}}})", "body.response_format.json_schema.schema must be a JSON schema", "body.response_format.json_schema.schema"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}})", "body.tools is not supported", "body.tools"},
      {R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}})", "body.tool_choice is not supported", "body.tool_choice"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "temprature": 0.1}})", "body.temprature is not a request field this server knows", "body.temprature"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "messages": []}})", "body.messages is not a field of /v1/completions", "body.messages"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "frequency_penalty": 2.5}})", "body.frequency_penalty is 2.5, outside [-2, 2]", "body.frequency_penalty"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "presence_penalty": "x"}})", "body.presence_penalty must be a number", "body.presence_penalty"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "logit_bias": {"abc": 1}}})", "the key must be a token id", "body.logit_bias"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "logit_bias": {"5": 101}}})", "body.logit_bias[\"5\"] is 101, outside [-100, 100]", "body.logit_bias"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "logit_bias": [1]}})", "body.logit_bias must be an object", "body.logit_bias"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "top_k": -5}})", "body.top_k is -5", "body.top_k"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "seed": "1"}})", "body.seed must be an integer", "body.seed"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "stop": [1]}})", "body.stop must be a string or an array of up to 4 strings", "body.stop"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "stop": ["a","b","c","d","e"]}})", "body.stop must be", "body.stop"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "n": 2}})", "body.n is 2", "body.n"},
      {R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "stream": true}})", "body.stream is true", "body.stream"},
      {"{\"custom_id\": \"a\xff\", " + ok_body + "}", "not UTF-8 text", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    const auto items = parse(c.line + "\n");
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].error.rfind("p.jsonl: line 1: ", 0), 0u) << items[0].error;
    EXPECT_NE(items[0].error.find(c.want), std::string::npos) << items[0].error;
    EXPECT_EQ(items[0].error_param, c.param);
    // The record's id: its own custom_id when it could be read, else the line.
    EXPECT_FALSE(items[0].custom_id.empty());
  }
  EXPECT_EQ(parse("{\"url\": 1}\n")[0].custom_id, "line-1");
  EXPECT_EQ(line_error(R"({"custom_id": "z", "url": "/v1/completions", "body": {"prompt": "x", "stop": null, "seed": null}})"), "");
  // Not-implemented fields at their defaults are no request for anything: accepted.
  EXPECT_EQ(line_error(R"({"custom_id": "z", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "logprobs": false, "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "store": false, "top_logprobs": null}})"), "");
  EXPECT_EQ(line_error(R"({"custom_id": "z", "url": "/v1/completions", "body": {"prompt": "x", "echo": false, "best_of": 1, "logprobs": null, "suffix": null}})"), "");
  // A line that is no request never reached the endpoint (OpenAI's top-level error); a request
  // the endpoint refuses is a 400 response.
  EXPECT_EQ(parse("not json\n")[0].error_code, "invalid_line");
  EXPECT_EQ(parse(R"({"custom_id": "a", "url": "/v2/x", "body": {}})" "\n")[0].error_code, "invalid_line");
  EXPECT_EQ(parse(R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "top_p": 9}})" "\n")[0].error_code, "invalid_request");
}

TEST(Prompts, PenaltiesLogitBiasAndSamplerExtensionsAreRead) {
  const auto items = parse(
      R"({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x", "frequency_penalty": 0.5, "presence_penalty": -1.25, "logit_bias": {"7": -100, "12": 3.5}, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1}})"
      "\n");
  ASSERT_EQ(items.size(), 1u);
  ASSERT_TRUE(items[0].error.empty()) << items[0].error;
  EXPECT_FLOAT_EQ(*items[0].o.frequency_penalty, 0.5f);
  EXPECT_FLOAT_EQ(*items[0].o.presence_penalty, -1.25f);
  EXPECT_EQ(*items[0].o.top_k, 5);
  EXPECT_FLOAT_EQ(*items[0].o.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*items[0].o.repeat_penalty, 1.1f);
  auto bias = items[0].o.logit_bias;
  std::sort(bias.begin(), bias.end());
  ASSERT_EQ(bias.size(), 2u);
  EXPECT_EQ(bias[0].first, 7);
  EXPECT_FLOAT_EQ(bias[0].second, -100.0f);
  EXPECT_EQ(bias[1].first, 12);
  EXPECT_FLOAT_EQ(bias[1].second, 3.5f);
}

TEST(Prompts, AFileThatCannotRunIsOneFatalErrorBeforeAnythingRuns) {
  EXPECT_NE(fatal("").find("p.jsonl: no prompts (the file is empty)"), std::string::npos);
  EXPECT_NE(fatal("\n  \n\r\n").find("every line is blank"), std::string::npos);
  const std::string dup = fatal(R"({"custom_id": "q", "url": "/v1/completions", "body": {"prompt": "x"}})"
                                "\n\n"
                                R"({"custom_id": "q", "url": "/v1/completions", "body": {"prompt": "y"}})");
  EXPECT_NE(dup.find("line 3: custom_id 'q' is already used on line 1"), std::string::npos) << dup;
  EXPECT_NE(test::error_message_of<Error>([] { read_prompts("/nonexistent/p.txt", PromptFormat::kAuto, false); })
                .find("/nonexistent/p.txt: cannot open"),
            std::string::npos);
}

// Random bytes in either format: no crash, every item is a prompt or an error naming its line.
TEST(Prompts, BinaryGarbageGivesPerLineErrorsNotACrash) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    std::string s(1 + rng() % 4000, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    for (const PromptFormat f : {PromptFormat::kText, PromptFormat::kJsonl}) {
      try {
        for (const PromptItem& it : parse_prompts(s, "g.bin", f, false)) {
          if (!it.error.empty()) {
            EXPECT_NE(it.error.find("g.bin: line " + std::to_string(it.line)), std::string::npos);
          }
          if (f == PromptFormat::kJsonl) {
            EXPECT_FALSE(it.error.empty());
          }
        }
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("g.bin: "), std::string::npos) << e.what();
      }
    }
  }
}

TEST(Prompts, FormatFollowsTheExtensionUnlessGiven) {
  EXPECT_EQ(resolve_format(PromptFormat::kAuto, "x.jsonl"), PromptFormat::kJsonl);
  EXPECT_EQ(resolve_format(PromptFormat::kAuto, "x.json"), PromptFormat::kJsonl);
  EXPECT_EQ(resolve_format(PromptFormat::kAuto, "x.txt"), PromptFormat::kText);
  EXPECT_EQ(resolve_format(PromptFormat::kText, "x.jsonl"), PromptFormat::kText);
}

TEST(Results, ANewFileIsCreatedAndAnExistingOneNeedsResume) {
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  {
    auto r = open_results(path, false);
    EXPECT_TRUE(r->done().empty());
    r->write(nlohmann::ordered_json{{"custom_id", "a"}, {"x", "line\nbreak"}});
    r->write(nlohmann::ordered_json{{"custom_id", "b"}});
  }
  EXPECT_EQ(slurp(path), "{\"custom_id\":\"a\",\"x\":\"line\\nbreak\"}\n{\"custom_id\":\"b\"}\n");
  const std::string msg = test::error_message_of<Error>([&] { open_results(path, false); });
  EXPECT_NE(msg.find("already holds results (54 bytes); add --resume"), std::string::npos) << msg;
  auto r = open_results(path, true);
  EXPECT_EQ(r->done(), (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(r->torn_bytes(), 0);
}

TEST(Results, ResumeCutsATornLastLineAndAppendsAfterTheWholeRecords) {
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  std::ofstream(path) << "{\"custom_id\":\"a\"}\n{\"custom_id\":\"b\"}\n{\"custom_id\":\"c\",\"resp";
  {
    auto r = open_results(path, true);
    EXPECT_EQ(r->done(), (std::set<std::string>{"a", "b"}));
    EXPECT_EQ(r->torn_bytes(), 22);  // {"custom_id":"c","resp
    r->write(nlohmann::ordered_json{{"custom_id", "c"}});
  }
  EXPECT_EQ(slurp(path), "{\"custom_id\":\"a\"}\n{\"custom_id\":\"b\"}\n{\"custom_id\":\"c\"}\n");
  // A torn first line: nothing whole yet.
  std::ofstream(path, std::ios::trunc) << "{\"custo";
  auto r = open_results(path, true);
  EXPECT_TRUE(r->done().empty());
  EXPECT_EQ(slurp(path), "");
}

TEST(Results, AnEditedFileIsRefusedNamingTheLineAndLeftAsItIs) {
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  const std::string content = "{\"custom_id\":\"a\"}\nnot json\n{\"custom_id\":\"b\"}\n";
  std::ofstream(path) << content;
  const std::string msg = test::error_message_of<Error>([&] { open_results(path, true); });
  EXPECT_NE(msg.find("r.jsonl: line 2 is not a result record"), std::string::npos) << msg;
  EXPECT_EQ(slurp(path), content);
  std::ofstream(path, std::ios::trunc) << "{\"id\":1}\n";
  EXPECT_NE(test::error_message_of<Error>([&] { open_results(path, true); }).find("line 1"), std::string::npos);
  // A line nested 100000 deep (it once crashed every resume): an error naming it, no crash.
  std::ofstream(path, std::ios::trunc) << "{\"custom_id\":\"a\"}\n" << std::string(100000, '[') << "\n";
  const std::string deep = test::error_message_of<Error>([&] { open_results(path, true); });
  EXPECT_NE(deep.find("line 2 is not a result record"), std::string::npos) << deep;
}

TEST(Records, ResultAndErrorRecordsHaveTheBatchOutputShape) {
  PromptItem chat;
  chat.custom_id = "q1";
  chat.line = 4;
  chat.endpoint = Endpoint::kChat;
  Completion c{"Paris.", "stop", 12, 3, 0.25, 1.25, 7, nullptr};
  const auto r = result_record(chat, "smol", {c}, 1700000000);
  EXPECT_EQ(r["custom_id"], "q1");
  EXPECT_EQ(r["response"]["status_code"], 200);
  EXPECT_TRUE(r["error"].is_null());
  const auto& body = r["response"]["body"];
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "smol");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Paris.");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["total_tokens"], 15);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 7);
  EXPECT_DOUBLE_EQ(r["timing"]["decode_tokens_per_s"].get<double>(), 2.0);
  EXPECT_EQ(r["id"].get<std::string>().rfind("batch_req_", 0), 0u);
  // The Batch API's key order: id, custom_id, response, error.
  EXPECT_EQ(r.dump().rfind("{\"id\":\"batch_req_", 0), 0u) << r.dump();
  PromptItem comp = chat;
  comp.endpoint = Endpoint::kCompletion;
  EXPECT_EQ(result_record(comp, "smol", {c}, 0)["response"]["body"]["choices"][0]["text"], "Paris.");
  const auto e = error_record(chat, "invalid_request", "p.jsonl: line 4: body.seed must be an integer", "body.seed");
  EXPECT_EQ(e["custom_id"], "q1");
  EXPECT_EQ(e["response"]["status_code"], 400);
  EXPECT_EQ(e["response"]["body"]["error"]["param"], "body.seed");
  EXPECT_EQ(e["response"]["body"]["error"]["code"], "invalid_request");
  // The endpoint answered (a 400): OpenAI keeps the top-level error for requests that never
  // reached it, so a strict reader counts this record once.
  EXPECT_TRUE(e["error"].is_null());
  const auto l = error_record(chat, "invalid_line", "p.jsonl: line 4: not valid JSON", "");
  EXPECT_TRUE(l["response"].is_null());
  EXPECT_EQ(l["error"]["code"], "invalid_line");
  EXPECT_EQ(l["error"]["line"], 4);
  // Ids are unique per record: the same request answered twice (two runs) gets two.
  const auto r2 = result_record(chat, "smol", {c}, 1700000000);
  EXPECT_NE(r["id"], r2["id"]);
  EXPECT_NE(r["response"]["request_id"], r2["response"]["request_id"]);
  EXPECT_NE(r["response"]["body"]["id"], r2["response"]["body"]["id"]);
  EXPECT_EQ(r2["response"]["body"]["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(r2["response"]["body"]["id"].get<std::string>().size(), 9u + 24u);
}

TEST(Records, RequestSeedsDependOnTheJobSeedAndTheCustomIdOnly) {
  EXPECT_EQ(request_seed(1, "a"), request_seed(1, "a"));
  EXPECT_NE(request_seed(1, "a"), request_seed(1, "b"));
  EXPECT_NE(request_seed(1, "a"), request_seed(2, "a"));
}

TEST(Progress, TheSummaryCountsRequestsAndTokens) {
  Progress p(ProgressMode::kNone, 3, 2, 30, stderr, 1);
  p.token();
  p.finished(true, 10, 5, 6);
  p.finished(false, 0, 0);
  EXPECT_NE(p.status_line().find("2/3 done (66.7%), 1 errors"), std::string::npos) << p.status_line();
  p.finished(true, 7, 4);
  const std::string s = p.summary();
  // The errors of the resumed file count too; shared-prefix tokens were never computed.
  EXPECT_NE(s.find("3 requests: 2 answered, 1 errors; 2 done before (resume), 1 of them errors: the results file holds 2 "
                   "errors in all; tokens in 17 (6 from shared prefixes), out 9"), std::string::npos) << s;
  EXPECT_NE(s.find("tokens/s computed (in, less shared prefixes, + out)"), std::string::npos) << s;
}

TEST(Progress, TheFirstLogLineComesWithTheFirstResult) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p(ProgressMode::kLog, 3, 0, 30, f);
    p.finished(true, 4, 2);  // long before the 30 s interval
    p.finished(true, 4, 2);  // the next waits for the interval
  }
  std::rewind(f);
  std::string out(4096, '\0');
  out.resize(std::fread(out.data(), 1, out.size(), f));
  std::fclose(f);
  EXPECT_NE(out.find("ranklm run: 1/3 done"), std::string::npos) << out;
  EXPECT_EQ(out.find("ranklm run: 2/3 done"), std::string::npos) << out;
}

TEST(Results, ASecondJobOnTheSameFileIsRefusedNamingTheHolder) {
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  auto first = open_results(path, false);
  first->write(nlohmann::ordered_json{{"custom_id", "a"}});
  // Another open of the same file (a second job) finds the lock held, even with --resume.
  const std::string msg = test::error_message_of<Error>([&] { open_results(path, true); });
  EXPECT_NE(msg.find("another job is writing these results (host "), std::string::npos) << msg;
  EXPECT_NE(msg.find("pid " + std::to_string(::getpid())), std::string::npos) << msg;
  EXPECT_NE(msg.find("--wait-lock"), std::string::npos) << msg;
  EXPECT_EQ(slurp(path), "{\"custom_id\":\"a\"}\n");
  first.reset();  // the job ends: the lock is free
  auto second = open_results(path, true);
  EXPECT_EQ(second->done(), (std::set<std::string>{"a"}));
}

TEST(Results, WaitLockWaitsForTheHolderToEnd) {
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  auto first = open_results(path, false);
  std::atomic<bool> released{false};
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first->write(nlohmann::ordered_json{{"custom_id", "last"}});
    released = true;
    first.reset();
  });
  ResultsOptions o;
  o.resume = true;
  o.wait_lock = true;
  ResultsFile second(path, o);
  EXPECT_TRUE(released.load());
  EXPECT_EQ(second.done(), (std::set<std::string>{"last"}));
  t.join();
}

TEST(Results, ResumingAnotherPromptFileOrModelIsRefusedUnlessForced) {
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  open_results(path, false, "prompts A", "model-1")->write(nlohmann::ordered_json{{"custom_id", "a"}});
  std::ofstream(path, std::ios::app) << "{\"custom_id\":\"b\",\"to";  // torn: must stay until the job is checked
  const std::string before = slurp(path);
  const std::string p = test::error_message_of<Error>([&] { open_results(path, true, "prompts B", "model-1"); });
  EXPECT_NE(p.find("these results answer another job: the prompt file differs"), std::string::npos) << p;
  EXPECT_NE(p.find("--force-resume"), std::string::npos) << p;
  const std::string m = test::error_message_of<Error>([&] { open_results(path, true, "prompts A", "model-2"); });
  EXPECT_NE(m.find("the model differs"), std::string::npos) << m;
  EXPECT_EQ(slurp(path), before);  // nothing changed by a refused resume
  EXPECT_EQ(open_results(path, true, "prompts A", "model-1")->done(), (std::set<std::string>{"a"}));
  EXPECT_EQ(open_results(path, true, "prompts B", "model-2", true)->done(), (std::set<std::string>{"a"}));
  // Forced: the new job is recorded, so resuming it again needs no force.
  EXPECT_EQ(open_results(path, true, "prompts B", "model-2")->done(), (std::set<std::string>{"a"}));
}

TEST(Results, AnOutThatIsNotARegularFileIsRefusedWithoutHanging) {
  test::TempDir dir;
  const std::string fifo = dir.str() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  for (const std::string& out : {fifo, std::string("/dev/full"), std::string("/dev/null"), dir.str()}) {
    const std::string msg = test::error_message_of<Error>([&] { open_results(out, false); });
    EXPECT_NE(msg.find("--out is not a regular file"), std::string::npos) << out << ": " << msg;
  }
  const std::string prompts = dir.str() + "/p.txt";
  std::ofstream(prompts) << "hello\n";
  ResultsOptions o;
  o.prompts_path = prompts;
  const std::string same = test::error_message_of<Error>([&] { ResultsFile r(prompts, o); });
  EXPECT_NE(same.find("--out is the prompt file itself"), std::string::npos) << same;
  EXPECT_EQ(slurp(prompts), "hello\n");
}

TEST(Results, RecordsAcrossReadPiecesAreAllFound) {
  // More than one 4 MiB piece, with records of random lengths straddling the boundaries.
  test::TempDir dir;
  const std::string path = dir.str() + "/r.jsonl";
  std::mt19937 rng(5);
  std::set<std::string> ids;
  {
    std::ofstream os(path);
    size_t bytes = 0;
    for (int i = 0; bytes < (size_t{9} << 20); ++i) {
      const std::string id = "req-" + std::to_string(i);
      const std::string line = json{{"custom_id", id}, {"text", std::string(rng() % 20000, 'x')}}.dump() + "\n";
      os << line;
      bytes += line.size();
      ids.insert(id);
    }
    os << "{\"custom_id\":\"torn";
  }
  const auto size = std::filesystem::file_size(path);
  auto r = open_results(path, true);
  EXPECT_EQ(r->done(), ids);
  EXPECT_EQ(r->torn_bytes(), 18);
  EXPECT_EQ(std::filesystem::file_size(path), size - 18);
}

TEST(Prompts, ADeeplyNestedLineIsThatLinesErrorNotACrash) {
  const std::string deep = std::string(100000, '[');
  const auto items = parse(deep + "\n" + R"({"custom_id": "ok", "url": "/v1/completions", "body": {"prompt": "x"}})" + "\n");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_NE(items[0].error.find("p.jsonl: line 1: JSON nested deeper than 64 levels"), std::string::npos) << items[0].error;
  EXPECT_TRUE(items[1].error.empty());
  EXPECT_TRUE(json_deeper_than("[[[", 2));
  EXPECT_FALSE(json_deeper_than("[[\"[[[[\"]]", 2));  // brackets inside strings do not count
  EXPECT_FALSE(json_deeper_than("[[\"\\\"[[[[\"]]", 2));
}

TEST(Prompts, AByteOrderMarkIsNotPartOfTheFirstPrompt) {
  const auto items = parse("\xEF\xBB\xBFhello\nworld\n", PromptFormat::kText);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].prompts.at(0).text, "hello");
  const auto j = parse("\xEF\xBB\xBF{\"custom_id\": \"a\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\"}}\n");
  EXPECT_TRUE(j.at(0).error.empty()) << j.at(0).error;
}

TEST(Prompts, AFileThatCannotBeReadWholeIsAnError) {
  test::TempDir dir;
  EXPECT_NE(test::error_message_of<Error>([&] { read_prompts("/dev/zero", PromptFormat::kText, false); })
                .find("/dev/zero: the prompt file is not a regular file or a pipe"),
            std::string::npos);
  EXPECT_NE(test::error_message_of<Error>([&] { read_prompts(dir.str(), PromptFormat::kText, false); })
                .find("the prompt file is a directory"),
            std::string::npos);
  const std::string big = dir.str() + "/big.txt";
  std::ofstream(big) << std::string(5000, 'a');
  EXPECT_NE(test::error_message_of<Error>([&] { read_whole_file(big, "the prompt file", 4096); })
                .find("is 5000 bytes, more than the 4096 bytes allowed"),
            std::string::npos);
  // A pipe is read to its end.
  const std::string fifo = dir.str() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  std::thread writer([&] { std::ofstream(fifo) << std::string(200000, 'b') << "\n"; });
  EXPECT_EQ(read_whole_file(fifo, "the prompt file", 1 << 20).size(), 200001u);
  writer.join();
}

TEST(Records, AModelErrorIsTheServersFault) {
  PromptItem it;
  it.line = 4;
  it.custom_id = "q4";
  const json bad_request = error_record(it, "invalid_request", "p.jsonl: line 4: bad", "body.top_p");
  EXPECT_EQ(bad_request["response"]["status_code"], 400);
  EXPECT_EQ(bad_request["response"]["body"]["error"]["type"], "invalid_request_error");
  const json model = error_record(it, "model_error", "p.jsonl: line 4: the model's logits were NaN", "");
  EXPECT_EQ(model["response"]["status_code"], 500);
  EXPECT_EQ(model["response"]["body"]["error"]["type"], "server_error");
  EXPECT_EQ(model["response"]["body"]["error"]["code"], "model_error");
  EXPECT_TRUE(model["error"].is_null());
  EXPECT_EQ(model["custom_id"], "q4");
}
