"""Structured output through ranklm serve and ranklm run (called by serve_test.py on every layout):
  - the openai client's chat.completions.parse with a pydantic model (nested objects, an enum,
    a list, an optional field): every one of 100 requests, 16 at a time, parses and validates;
  - response_format json_object: the text is a JSON object;
  - a batch JSONL of the same requests through `ranklm run`: every record parses and validates;
  - misuse: an unsupported keyword, a schema nested too deep or too large, a pattern that is no
    regular expression, an unknown type: 400 naming the field, the server unharmed.
"""
import concurrent.futures as cf
import enum
import json
import random
from typing import List, Optional

import openai
import pydantic

from batch_job import run_batch

H = {"Content-Type": "application/json"}


class Colour(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


# Bounds, as an extraction schema gives them: at temperature 0 a 135M model repeats a list item
# or a piece of a string without end for a few prompts in a hundred when nothing bounds them
# (4 of 100 with the strings unbounded, 39 with the list unbounded too; cut at max_tokens).
Name = pydantic.constr(max_length=32)


class Address(pydantic.BaseModel):
    city: Name
    country: Name


class Person(pydantic.BaseModel):
    name: Name
    age: int
    colours: List[Colour] = pydantic.Field(max_length=3)
    address: Address
    nickname: Optional[pydantic.constr(max_length=24)] = None


NAMES = ["Alice", "Bob", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia"]
CITIES = [("Paris", "France"), ("Lagos", "Nigeria"), ("Osaka", "Japan"), ("Lima", "Peru"), ("Oslo", "Norway")]


def prompts(n):
    rng = random.Random(5)
    out = []
    for i in range(n):
        city, country = rng.choice(CITIES)
        cols = rng.sample(["red", "green", "blue"], rng.randint(1, 2))
        out.append(f"{rng.choice(NAMES)} is {rng.randint(18, 80)} years old, lives in {city}, {country}, and likes "
                   f"{' and '.join(cols)}. Extract the person as JSON.")
    return out


def run(s, label, args, model, check, n=100):
    texts = prompts(n)

    def one(text):
        r = s.client.chat.completions.parse(model=model, messages=[{"role": "user", "content": text}],
                                            response_format=Person, temperature=0, max_tokens=200)
        return r.choices[0].message.parsed, r.choices[0].finish_reason

    ok, bad = 0, []
    with cf.ThreadPoolExecutor(16) as pool:
        for fut in [pool.submit(one, t) for t in texts]:
            try:
                p, reason = fut.result()
                if isinstance(p, Person) and reason == "stop":
                    ok += 1
                else:
                    bad.append(repr((p, reason)))
            except (openai.OpenAIError, pydantic.ValidationError, ValueError) as e:
                bad.append(repr(e)[:200])
    check(ok == n, f"{label}: chat.completions.parse with a pydantic model: {ok} of {n} parse and validate", bad[:2])
    r = s.client.chat.completions.create(model=model, messages=[{"role": "user", "content": "A cat named Tom is 3 years "
                                                                                             "old. Give his name and age as a "
                                                                                             "JSON object."}],
                                         response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    try:
        obj = json.loads(r.choices[0].message.content)
    except ValueError:
        obj = None
    check(isinstance(obj, dict), f"{label}: response_format json_object gives a JSON object", r.choices[0].message.content)
    # The same requests as a batch job.
    schema = openai.lib._pydantic.to_strict_json_schema(Person)
    lines = []
    for i, t in enumerate(texts):
        body = {"messages": [{"role": "user", "content": t}], "temperature": 0, "max_tokens": 200,
                "response_format": {"type": "json_schema", "json_schema": {"name": "Person", "schema": schema, "strict": True}}}
        lines.append({"custom_id": f"p{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    # Too large for a request: an error record naming the bound, the rest runs.
    big = {"type": "object", "properties": {f"p{i}": {"type": "integer", "description": "x" * 40} for i in range(2000)}}
    body = {"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "Big", "schema": big}}}
    lines.append({"custom_id": "big", "method": "POST", "url": "/v1/chat/completions", "body": body})
    valid = 0
    for rec in run_batch(args, "structured", lines, "--parallel", "16"):
        if rec["custom_id"] == "big":
            err = rec["response"]["body"].get("error", {})
            check("bytes of JSON; at most 65536" in err.get("message", ""), f"{label}: a schema over 64 KiB is an error record "
                  f"naming the bound", err)
            continue
        try:
            Person.model_validate_json(rec["response"]["body"]["choices"][0]["message"]["content"])
            valid += 1
        except (pydantic.ValidationError, KeyError):
            pass
    check(valid == n, f"{label}: ranklm run with response_format json_schema: {valid} of {n} records validate")
    # Misuse.
    deep = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    msg = [{"role": "user", "content": "x"}]
    cases = [({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
             (deep, "deeper than 32"),
             ({"type": "string", "pattern": "(["}, "cannot be turned into a grammar"),
             ({"type": "strin"}, "must be a JSON type")]
    for schema, what in cases:
        body = {"messages": msg, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
        st, j = s.raw("POST", "/v1/chat/completions", json.dumps(body), H)
        err = j.get("error", {}) if isinstance(j, dict) else {}
        check(st == 400 and what in err.get("message", "") and err.get("param", "").startswith("response_format"),
              f"{label}: response_format refused ({what}): {st} {err.get('param')}", err.get("message", "")[:200])
    st, _ = s.raw("GET", "/health")
    check(st == 200, f"{label}: the server is unharmed after the refused schemas")
