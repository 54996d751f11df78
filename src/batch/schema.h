// The JSON schemas of response_format that ranklm constrains decoding to (grammar/grammar.h):
// what pydantic and the OpenAI client emit. A schema is checked as untrusted input before
// anything runs: a keyword outside the supported set is refused naming it and where it is
// (a schema the grammar would silently not enforce is worse than a 400), and so are a schema
// nested too deep, with too many subschemas, or too long.
//
// Supported: type (one or a list), properties, required, additionalProperties,
// minProperties, maxProperties; items, prefixItems, minItems, maxItems; enum, const; anyOf,
// oneOf, allOf; $ref to #, #/$defs/... or #/definitions/...; $defs, definitions; minLength,
// maxLength, pattern, format (date, time, date-time, duration, email, hostname, ipv4, ipv6,
// uri, uri-reference, uri-template, uuid, json-pointer, relative-json-pointer); minimum,
// maximum, exclusiveMinimum, exclusiveMaximum; annotations (title, description, default,
// examples, $schema, $id, $comment, deprecated, readOnly, writeOnly).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace ranklm::batch {

// Empty when the schema is supported, else why, naming the keyword and its JSON pointer.
std::string check_json_schema(const nlohmann::ordered_json& schema);

}  // namespace ranklm::batch
