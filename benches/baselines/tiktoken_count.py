"""Python baseline for token estimates: json.loads every line and count its
input tokens with tiktoken, by the same rule as `batchkit stats`
(OpenAI cookbook: 3 tokens per message plus its role, content and name(+1),
3 to prime the reply; prompts and inputs as text). Prints the total.

tiktoken downloads its encodings on first use; to run offline it is given
the same .tiktoken files that batchkit embeds (crates/core/data/), through
TIKTOKEN_CACHE_DIR."""
import gzip
import hashlib
import json
import os
import sys
import tempfile

URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def offline_cache():
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../crates/core/data")
    cache = os.path.join(tempfile.gettempdir(), "batchkit-tiktoken-cache")
    os.makedirs(cache, exist_ok=True)
    for name in ("o200k_base", "cl100k_base"):
        target = os.path.join(cache, hashlib.sha1(URL.format(name).encode()).hexdigest())
        if not os.path.exists(target):
            with gzip.open(f"{data}/{name}.tiktoken.gz") as f, open(target, "wb") as out:
                out.write(f.read())
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


offline_cache()
import tiktoken  # noqa: E402  (after the cache is in place)

O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss", "omni-moderation")
CL100K = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002", "davinci-002", "babbage-002")
encodings = {}


def encoding(model):
    m = (model or "").removeprefix("ft:")
    name = "o200k_base" if m.startswith(O200K) else "cl100k_base" if m.startswith(CL100K) else "o200k_base"
    if name not in encodings:
        encodings[name] = tiktoken.get_encoding(name)
    return encodings[name]


def count(enc, text):
    return len(enc.encode_ordinary(text))


def message(enc, m):
    n = 3
    if isinstance(m.get("role"), str):
        n += count(enc, m["role"])
    c = m.get("content")
    if isinstance(c, str):
        n += count(enc, c)
    elif isinstance(c, list):
        n += sum(count(enc, p["text"]) for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(m.get("name"), str):
        n += count(enc, m["name"]) + 1
    return n


total = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        if not line.strip():
            continue
        body = json.loads(line).get("body") or {}
        enc = encoding(body.get("model"))
        if isinstance(body.get("messages"), list):
            total += 3 + sum(message(enc, m) for m in body["messages"])
        if isinstance(body.get("instructions"), str):
            total += count(enc, body["instructions"])
        for key in ("prompt", "input"):
            v = body.get(key)
            if isinstance(v, str):
                total += count(enc, v)
            elif isinstance(v, list):
                for item in v:
                    if isinstance(item, str):
                        total += count(enc, item)
                    elif isinstance(item, (int, float)):
                        total += 1
                    elif isinstance(item, list):
                        total += len(item)
                    elif isinstance(item, dict):
                        total += message(enc, item)
print(total)
