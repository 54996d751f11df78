// Structured output (grammar/grammar.h over xgrammar): on real vocabularies (GPT-2's byte-level
// BPE, LLaMA's SentencePiece with byte fallback), a walk that picks tokens at random among those
// the mask allows always ends in a document that parses and that the schema validates; the
// matcher accepts every token its mask allowed; and the schema checks of a request
// (batch/schema.h, grammar::check_schema) refuse what they cannot enforce, naming it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "batch/schema.h"
#include "grammar/grammar.h"
#include "io/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace ranklm;
using json = nlohmann::ordered_json;

namespace {

// What pydantic emits for a model with a bounded string, an integer range, a list of enum
// values, an optional nested model ($ref through anyOf with null) and a number.
const char* kSchema = R"({"type": "object", "title": "Person",
  "properties": {"name": {"type": "string", "maxLength": 12, "title": "Name"},
                 "age": {"type": "integer", "minimum": 0, "maximum": 150},
                 "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "bb", "ccc"]}, "minItems": 1, "maxItems": 3},
                 "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}], "default": null},
                 "score": {"type": "number"}},
  "required": ["name", "age", "tags"],
  "$defs": {"Pet": {"type": "object", "properties": {"kind": {"type": "string", "enum": ["cat", "dog"]},
                                                    "indoor": {"type": "boolean"}}, "required": ["kind", "indoor"]}}})";

size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

// Whether doc is what kSchema validates (every rule of it, checked by hand).
std::string violates(const json& doc) {
  if (!doc.is_object()) return "not an object";
  for (const auto& [k, v] : doc.items()) {
    if (k != "name" && k != "age" && k != "tags" && k != "pet" && k != "score") return "property " + k;
  }
  for (const char* k : {"name", "age", "tags"}) {
    if (!doc.contains(k)) return std::string("missing ") + k;
  }
  if (!doc["name"].is_string() || code_points(doc["name"].get<std::string>()) > 12) return "name";
  if (!doc["age"].is_number_integer() || doc["age"].get<int64_t>() < 0 || doc["age"].get<int64_t>() > 150) return "age";
  const json& tags = doc["tags"];
  if (!tags.is_array() || tags.empty() || tags.size() > 3) return "tags";
  for (const json& t : tags) {
    if (t != "a" && t != "bb" && t != "ccc") return "tag " + t.dump();
  }
  if (doc.contains("pet") && !doc["pet"].is_null()) {
    const json& p = doc["pet"];
    if (!p.is_object() || p.size() != 2 || !p.contains("kind") || !p.contains("indoor")) return "pet";
    if ((p["kind"] != "cat" && p["kind"] != "dog") || !p["indoor"].is_boolean()) return "pet fields";
  }
  if (doc.contains("score") && !doc["score"].is_number()) return "score";
  return "";
}

// Random walks through the grammar: each step, a random token among those allowed (one that
// may close something, more often than not; an end token as soon as it is allowed).
void walk(const std::string& vocab_file, const grammar::Spec& spec, int walks, bool validate) {
  auto f = gguf::File::open(test::fixture(vocab_file));
  auto tok = Tokenizer::from_gguf(*f);
  const int64_t nv = tok->n_vocab();
  const std::vector<int32_t> ends = tok->eog_tokens();
  grammar::Compiler compiler(*tok, nv, ends);
  std::mt19937 rng(7);
  std::vector<float> row(static_cast<size_t>(nv));
  for (int w = 0; w < walks; ++w) {
    auto m = compiler.start(spec);
    std::vector<int32_t> out;
    bool ended = false;
    for (int step = 0; step < 2000 && !ended; ++step) {
      std::fill(row.begin(), row.end(), 0.0f);
      m->mask(row.data(), nv);
      std::vector<int32_t> allowed, closing;
      for (int32_t t = 0; t < nv; ++t) {
        if (std::isinf(row[static_cast<size_t>(t)])) continue;
        allowed.push_back(t);
        const std::string p = tok->token_to_piece(t);
        if (p.find_first_of("\"]},") != std::string::npos) closing.push_back(t);
      }
      ASSERT_FALSE(allowed.empty()) << "the mask allows nothing after " << out.size() << " tokens";
      int32_t pick = -1;
      for (int32_t e : ends) {
        if (!std::isinf(row[static_cast<size_t>(e)])) pick = e;
      }
      if (pick < 0) {
        const auto& from = !closing.empty() && rng() % 3 != 0 ? closing : allowed;
        pick = from[rng() % from.size()];
      }
      ASSERT_TRUE(m->accept(pick)) << "the matcher refused token " << pick << " that its mask allowed";
      ended = std::find(ends.begin(), ends.end(), pick) != ends.end();
      if (!ended) out.push_back(pick);
    }
    ASSERT_TRUE(ended) << "no end within 2000 tokens: " << tok->decode(out);
    EXPECT_TRUE(m->finished());
    const std::string text = tok->decode(out);
    const json doc = json::parse(text, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << "does not parse: " << text;
    EXPECT_TRUE(doc.is_object()) << text;
    if (validate) EXPECT_EQ(violates(doc), "") << text;
  }
}

}  // namespace

TEST(Grammar, RandomWalksThroughASchemaEndInDocumentsItValidates) {
  for (const char* vocab : {"tokenizer/ggml-vocab-gpt-2.gguf", "tokenizer/ggml-vocab-llama-spm.gguf"}) {
    SCOPED_TRACE(vocab);
    walk(vocab, grammar::Spec{grammar::Kind::kJsonSchema, json::parse(kSchema).dump()}, 12, true);
    walk(vocab, grammar::Spec{grammar::Kind::kJsonObject, ""}, 6, false);
  }
}

TEST(Grammar, SchemasThatCannotBeEnforcedAreRefusedNamingWhy) {
  EXPECT_EQ(batch::check_json_schema(json::parse(kSchema)), "");
  EXPECT_EQ(grammar::check_schema(json::parse(kSchema).dump()), "");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"type": "object", "patternProperties": {"^a": {}}})", "keyword 'patternProperties' (at #) is not supported"},
      {R"({"properties": {"x": {"type": "integer", "multipleOf": 3}}})", "keyword 'multipleOf' (at #/properties/x)"},
      {R"({"not": {"type": "string"}})", "keyword 'not'"},
      {R"({"if": {}, "then": {}})", "keyword 'if'"},
      {R"({"type": "strin"})", "#/type must be a JSON type"},
      {R"({"$ref": "http://example.com/s.json"})", "#/$ref must be a reference inside the schema"},
      {R"({"type": "string", "format": "credit-card"})", "#/format must be one of the formats"},
      {R"({"properties": {"x": 5}})", "#/properties/x must be a schema"},
      {R"({"required": "x"})", "#/required must be an array of property names"},
      {R"({"maxLength": -1})", "#/maxLength must be a non-negative integer"},
  };
  for (const auto& [schema, want] : bad) {
    const std::string why = batch::check_json_schema(json::parse(schema));
    EXPECT_NE(why.find(want), std::string::npos) << schema << " -> " << why;
  }
  // Too deep, too many subschemas.
  std::string deep = R"({"type": "string"})";
  for (int i = 0; i < 40; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  EXPECT_NE(batch::check_json_schema(json::parse(deep)).find("deeper than 32 levels"), std::string::npos);
  json wide = {{"type", "object"}, {"properties", json::object()}};
  for (int i = 0; i < 5000; ++i) wide["properties"]["p" + std::to_string(i)] = {{"type", "integer"}};
  EXPECT_NE(batch::check_json_schema(wide).find("more than 4096 subschemas"), std::string::npos);
  // What only the grammar engine finds: a pattern that is no regular expression, a $ref to nothing.
  EXPECT_NE(grammar::check_schema(R"({"type": "string", "pattern": "(["})"), "");
  EXPECT_NE(grammar::check_schema(R"({"$ref": "#/$defs/Nowhere"})"), "");
  EXPECT_EQ(grammar::check_schema(R"({"type": "string", "pattern": "^[a-z]{2,4}$"})"), "");
}
