"""Structured-output and tool-call cases with known answers (scripts/eval_structured.py and
tests/llm_service/test_smollm2.py): what a user asking for JSON or a tool call should get back."""
from __future__ import annotations

import json
from typing import Any

PLACE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["city", "country"],
    "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40}}}

# (sentence, city, country): the answer is in the sentence; "right" = the field contains it (case-insensitive)
EXTRACTION = [
    ("I flew from Paris, France to Tokyo last week.", "Paris", "France"),
    ("The conference is held in Berlin, Germany every June.", "Berlin", "Germany"),
    ("She lives in Toronto, Canada with her dog.", "Toronto", "Canada"),
    ("Our office moved to Madrid, Spain.", "Madrid", "Spain"),
    ("He studied in Seoul, South Korea.", "Seoul", "Korea"),
    ("They met in Cairo, Egypt.", "Cairo", "Egypt"),
    ("The train arrives in Rome, Italy at noon.", "Rome", "Italy"),
    ("My cousin works in Sydney, Australia.", "Sydney", "Australia"),
    ("We spent the summer in Lisbon, Portugal.", "Lisbon", "Portugal"),
    ("The museum is in Amsterdam, Netherlands.", "Amsterdam", "Netherlands"),
    ("Flights to Nairobi, Kenya were delayed.", "Nairobi", "Kenya"),
    ("The startup was founded in Austin, United States.", "Austin", "United States"),
]


def extraction_prompt(sentence: str, constrained: bool) -> str:
    ask = f"Extract the city and the country from this sentence as JSON: {sentence}"
    if not constrained:    # the baseline has to be told the shape; the constrained request gets it from the schema
        ask += ' Reply with only a JSON object like {"city": "...", "country": "..."}.'
    return ask


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                   "properties": {"city": {"type": "string", "maxLength": 40}}}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two numbers",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["a", "b"],
                   "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}
TOOLS = [WEATHER, ADD]

# (question, function, arguments that must match)
TOOL_CALLS = [
    ("What is the weather in Paris?", "get_weather", {"city": "Paris"}),
    ("How is the weather in London today?", "get_weather", {"city": "London"}),
    ("Tell me the weather in Rome.", "get_weather", {"city": "Rome"}),
    ("What's the weather like in Tokyo?", "get_weather", {"city": "Tokyo"}),
    ("Is it raining in Dublin right now?", "get_weather", {"city": "Dublin"}),
    ("Add 10 and 32.", "add", {"a": 10, "b": 32}),
    ("Please add 7 and 5.", "add", {"a": 7, "b": 5}),
    ("What is 3 plus 4?", "add", {"a": 3, "b": 4}),
]


def tool_prompt_baseline(question: str) -> str:
    """The baseline's prompt: the tools and the format described in text, no constraint."""
    listed = json.dumps([t["function"] for t in TOOLS])
    return (f"You can call these functions: {listed}\nAnswer the question by calling one of them: reply with only "
            f'{{"name": <function name>, "arguments": <arguments object>}}.\nQuestion: {question}')


def place_right(value: Any, city: str, country: str) -> tuple[bool, bool]:
    """(city right, country right) of an extracted object."""
    if not isinstance(value, dict):
        return False, False
    return (city.lower() in str(value.get("city", "")).lower(),
            country.lower() in str(value.get("country", "")).lower())


def args_right(arguments: Any, want: dict[str, Any]) -> bool:
    if not isinstance(arguments, dict):
        return False
    for k, v in want.items():
        got = arguments.get(k)
        if isinstance(v, str):
            if not isinstance(got, str) or v.lower() not in got.lower():
                return False
        elif not isinstance(got, (int, float)) or isinstance(got, bool) or float(got) != float(v):
            return False
    return True


def first_json_object(text: str) -> Any:
    """The first JSON object in a text (the baseline's answer may wrap it in prose or a code fence)."""
    dec = json.JSONDecoder()
    for i, ch in enumerate(text or ""):
        if ch == "{":
            try:
                return dec.raw_decode(text[i:])[0]
            except ValueError:
                continue
    return None
