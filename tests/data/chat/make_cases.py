#!/usr/bin/env python3
"""Writes cases.json: expected renderings for test_chat, computed with Python's jinja2 in the
environment chat templates are written for (trim_blocks, lstrip_blocks, loop controls, a tojson
that keeps non-ASCII and insertion order, raise_exception).

Run it after changing a template here or a case below:
    python3 -m venv /tmp/j && /tmp/j/bin/pip install jinja2 && /tmp/j/bin/python make_cases.py
The output is committed; the test suite does not need jinja2.
"""
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


class TemplateRaised(Exception):
    pass


def raise_exception(message):
    raise TemplateRaised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render(template, context):
    try:
        return {"expected": make_env().from_string(template).render(**context)}
    except TemplateRaised as e:
        return {"error": str(e)}


# Small templates, one feature each (and the whitespace rules between them).
FEATURES = [
    ("text", "hello\n", {}),
    ("var", "{{ a }}-{{ b }}-{{ c }}-{{ d }}-{{ e }}", {"a": "x", "b": 3, "c": 2.5, "d": True, "e": None}),
    ("undefined_prints_empty", "[{{ nothing }}]", {}),
    ("list_and_dict_repr", "{{ l }} {{ d }}", {"l": [1, "a", None, True, 1.5], "d": {"k": "v", "n": [1]}}),
    ("string_repr_quotes", "{{ ['it\\'s', 'say \"hi\"', 'a\\nb'] }}", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("lstrip_blocks", "line\n    {% if true %}\n    indented\n    {% endif %}\nend", {}),
    ("minus_strip", "a   {%- if true -%}   b   {%- endif -%}   c", {}),
    ("minus_strip_var", "a \n {{- 'b' -}} \n c", {}),
    ("plus_disables_lstrip", "x\n    {%+ if true %}y{% endif %}", {}),
    ("comment", "a {# note #} b\n  {# own line #}\nc", {}),
    ("comment_strip", "a   {#- note -#}   b", {}),
    ("for_loop_vars", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}:{{ x }} {% endfor %}", {"xs": ["a", "b", "c"]}),
    ("for_prev_next", "{% for x in xs %}({{ loop.previtem }},{{ loop.nextitem }}){% endfor %}", {"xs": [1, 2, 3]}),
    ("for_else", "{% for x in xs %}{{ x }}{% else %}empty{% endfor %}", {"xs": []}),
    ("for_if_filter", "{% for x in xs if x > 1 %}{{ x }}{{ loop.length }} {% endfor %}", {"xs": [1, 2, 3, 0, 5]}),
    ("for_tuple_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("for_dict_keys", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("for_string", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {}),
    ("for_scope", "{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}", {}),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_cycle", "{% for i in range(5) %}{{ loop.cycle('a', 'b') }}{% endfor %}", {}),
    ("nested_loops", "{% for r in rows %}{% for c in r %}{{ c }}{% if not loop.last %},{% endif %}{% endfor %};{% endfor %}", {"rows": [[1, 2], [3], []]}),
    ("if_elif_else", "{% for n in [1,2,3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %} {% endfor %}", {}),
    ("set_namespace", "{% set ns = namespace(found=false, n=0) %}{% for x in xs %}{% if x == 'b' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }}", {"xs": ["a", "b", "c"]}),
    ("set_block", "{% set greeting %}Hello {{ name }}!{% endset %}[{{ greeting }}]", {"name": "Ada"}),
    ("set_tuple", "{% set a, b = [1, 2] %}{{ a }}{{ b }}", {}),
    ("macro", "{% macro tag(name, cls='x') %}<{{ name }} class={{ cls }}>{% endmacro %}{{ tag('a') }}{{ tag('b', cls='y') }}{{ tag(name='c') }}", {}),
    ("arith", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ -3 }}", {}),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true }}", {}),
    ("string_ops", "{{ 'ab' * 3 }} {{ 'x' + 'y' }} {{ [1] + [2, 3] }}", {}),
    ("compare_chain", "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ 2 >= 2 }} {{ 1 == 1.0 }} {{ 'a' != 'a' }}", {}),
    ("in_not_in", "{{ 'a' in 'cat' }} {{ 2 in [1,2] }} {{ 'k' in d }} {{ 'z' not in d }} {{ 3 not in [1] }}", {"d": {"k": 1}}),
    ("logic", "{{ true and false }} {{ true or false }} {{ not true }} {{ 0 or 'x' }} {{ '' and 'y' }} {{ not none }}", {}),
    ("ternary", "{{ 'yes' if flag else 'no' }} {{ 'y' if not flag }}|", {"flag": False}),
    ("subscripts", "{{ d['a'] }} {{ d.a }} {{ l[0] }} {{ l[-1] }} {{ l[5] }}|{{ d.missing }}|{{ 'abc'[1] }} {{ l.1 }}", {"d": {"a": 1}, "l": [10, 20, 30]}),
    ("slices", "{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[1:-1] }} {{ 'héllo'[1:3] }} {{ l[::2] }}", {"l": [1, 2, 3, 4, 5]}),
    ("dict_literal", "{% set d = {'a': 1, 'b': [1, 2], 'c': {'x': none}} %}{{ d | tojson }} {{ d.b[1] }}", {}),
    ("tests", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ n is none }} {{ x is string }} {{ 3 is number }} {{ 3 is integer }} {{ 3.0 is float }} {{ d is mapping }} {{ l is iterable }} {{ x is iterable }} {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ true is boolean }} {{ x is not none }} {{ l is sequence }}", {"x": "s", "n": None, "d": {}, "l": []}),
    ("test_eq_arg", "{{ 'a' is eq 'a' }} {{ 1 is equalto 2 }} {{ 2 is in [1, 2] }} {{ 1 is sameas true }} {{ x is true }} {{ x is false }}", {"x": True}),
    ("filter_trim", "[{{ '  a b \\n' | trim }}] [{{ 'xxaxx' | trim('x') }}]", {}),
    ("filter_length", "{{ l | length }} {{ 'héllo' | length }} {{ d | length }} {{ l | count }}", {"l": [1, 2], "d": {"a": 1}}),
    ("filter_case", "{{ 'Hello World' | upper }} {{ 'Hello World' | lower }} {{ 'hello world' | title }} {{ 'hELLO' | capitalize }}", {}),
    ("filter_default", "{{ x | default('d') }} {{ y | default('d') }} {{ '' | default('e', true) }} {{ none | default('n') }} {{ z | d('z') }}", {"y": "set"}),
    ("filter_join", "{{ l | join(', ') }} {{ l | join }} {{ users | join('/', attribute='name') }}", {"l": [1, "a", 2.5], "users": [{"name": "x"}, {"name": "y"}]}),
    ("filter_first_last", "{{ l | first }} {{ l | last }} {{ 'abc' | first }}", {"l": [3, 4, 5]}),
    ("filter_list_reverse", "{{ 'abc' | list }} {{ l | reverse | list }} {{ 'abc' | reverse }}", {"l": [1, 2, 3]}),
    ("filter_string_int_float", "{{ 3 | string + 'x' }} {{ '42' | int + 1 }} {{ 'x' | int }} {{ 3.7 | int }} {{ '2.5' | float }} {{ 2 | float }}", {}),
    ("filter_replace", "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'a.b' .replace('.', '-') }}", {}),
    ("filter_items", "{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("filter_select", "{{ l | select('odd') | list }} {{ l | reject('odd') | list }} {{ l | select | list }}", {"l": [0, 1, 2, 3]}),
    ("filter_selectattr", "{{ m | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }} {{ m | rejectattr('role', 'eq', 'user') | list | length }} {{ m | selectattr('flag') | list | length }}", {"m": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b", "flag": True}, {"role": "user", "content": "c"}]}),
    ("filter_map", "{{ ['a', 'b'] | map('upper') | join }} {{ m | map(attribute='x') | list }}", {"m": [{"x": 1}, {"x": 2}]}),
    ("filter_unique_sort", "{{ [3, 1, 2, 1] | unique | list }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ m | sort(attribute='k') | map(attribute='k') | list }}", {"m": [{"k": 2}, {"k": 1}]}),
    ("filter_abs_round_sum", "{{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round(0, 'floor') }} {{ [1, 2, 3] | sum }} {{ [1, 5, 3] | max }} {{ [4, 2] | min }}", {}),
    ("filter_indent", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(3, true) }}", {}),
    ("filter_tojson", "{{ v | tojson }}", {"v": {"s": "héllo \"q\" \\ \n\t", "n": [1, 2.5, None, True], "e": {}, "l": []}}),
    ("filter_tojson_indent", "{{ v | tojson(indent=2) }}", {"v": {"a": [1, {"b": None}], "c": "d", "e": [], "f": {}}}),
    ("filter_escape", "{{ '<a href=\"x\">&\\'</a>' | e }}", {}),
    ("filter_chain_precedence", "{{ 'x' + ' y ' | trim + 'z' }} {{ -1 | abs }}", {}),
    ("str_methods", "{{ '  a  '.strip() }}|{{ 'xxax'.lstrip('x') }}|{{ 'axx'.rstrip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|{{ 'abc'.find('c') }}|{{ 'a-b'.replace('-', '+') }}|{{ ', '.join(['x', 'y']) }}|{{ 'a b'.title() }}|{{ 'a,b,c'.split(',', 1) }}", {}),
    ("dict_methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }}", {"d": {"a": 1, "b": 2}}),
    ("range", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }}", {}),
    ("whitespace_mixed", "{%- for m in msgs %}\n  <{{ m }}>\n{%- endfor %}\n\n{% if x %}\n  yes\n{% else %}\n  no\n{% endif -%}\n  tail\n", {"msgs": ["a", "b"], "x": False}),
    ("raise_exception", "{% if x %}{{ raise_exception('bad input: ' + x) }}{% endif %}", {"x": "why"}),
    ("string_escapes", "{{ 'a\\tb\\\\c\\u00e9' }} {{ \"d'q\" }} {{ 'con' 'cat' }}", {}),
    ("none_literals", "{{ None }} {{ True }} {{ false }}", {}),
    ("numbers", "{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e3 }} {{ 10 / 4 }} {{ 1_000 }}", {}),
]

SYSTEM = "You are a careful assistant. Answer briefly."
CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "What is the capital of France?"}],
    "system_user": [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "What is the capital of France?"}],
    "multi_turn": [{"role": "system", "content": SYSTEM},
                   {"role": "user", "content": "Hi there! "},
                   {"role": "assistant", "content": " Hello. How can I help?"},
                   {"role": "user", "content": "Tell me a joke about ünïcode ✓."}],
    "no_system_multi": [{"role": "user", "content": "One"},
                        {"role": "assistant", "content": "Two"},
                        {"role": "user", "content": "Three"}],
    "bad_order": [{"role": "assistant", "content": "I speak first"},
                  {"role": "user", "content": "Hi"}],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOL_CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "{\"temp\": 21}"},
]
SPECIALS = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
    "qwen2": {"bos_token": "", "eos_token": "<|im_end|>"},
    "qwen2.5": {"bos_token": "", "eos_token": "<|im_end|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "gemma2": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "gemma3": {"bos_token": "<bos>", "eos_token": "<eos>"},
}


def main():
    cases = []
    for name, template, context in FEATURES:
        case = {"name": "feature/" + name, "template": template, "context": context}
        case.update(render(template, context))
        cases.append(case)
    for tname, specials in SPECIALS.items():
        with open(os.path.join(HERE, tname + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        for cname, messages in CONVERSATIONS.items():
            for agp in (True, False):
                context = dict(specials, messages=messages, add_generation_prompt=agp,
                               date_string="21 Nov 2026")
                case = {"name": f"{tname}/{cname}/{'gen' if agp else 'nogen'}", "template_file": tname + ".jinja",
                        "context": context}
                case.update(render(source, context))
                cases.append(case)
        if tname in ("llama3.1", "llama3.2", "qwen2.5"):
            context = dict(specials, messages=TOOL_CONVERSATION, tools=TOOLS, add_generation_prompt=True,
                           date_string="21 Nov 2026")
            case = {"name": f"{tname}/tools", "template_file": tname + ".jinja", "context": context}
            case.update(render(source, context))
            cases.append(case)
    with open(os.path.join(HERE, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
