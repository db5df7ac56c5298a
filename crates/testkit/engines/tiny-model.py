"""A tiny random-weight llama model (GGUF) for the real-engine tests.

The tests exercise the serving (llama.cpp's slots, HTTP threads, errors,
restarts), not the answers, so the weights are random; the vocabulary is
the real one that ships in llama.cpp's sources (a vocabulary-only GGUF),
so prompts tokenize as they would. A few MB, made in seconds.

usage: tiny-model.py --vocab ggml-vocab-llama-spm.gguf --out tiny.gguf
"""

import argparse

import numpy as np
import gguf

# Small enough to answer in milliseconds on a CPU; the context is short so
# that a test can send a prompt longer than it.
EMBED = 64
LAYERS = 2
HEADS = 4
FF = 128
CONTEXT = 256

# ChatML: llama-server applies it to /v1/chat/completions.
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    reader = gguf.GGUFReader(args.vocab)
    field = lambda name: reader.fields[name].contents()  # noqa: E731
    tokens = field("tokenizer.ggml.tokens")
    scores = field("tokenizer.ggml.scores")
    types = field("tokenizer.ggml.token_type")
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("batchkit-tiny")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(EMBED)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(EMBED // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for key, add in (
        ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
        ("tokenizer.ggml.unknown_token_id", w.add_unk_token_id),
    ):
        if key in reader.fields:
            add(int(field(key)))
    w.add_chat_template(TEMPLATE)

    rng = np.random.default_rng(args.seed)

    def tensor(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    def ones(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    tensor("token_embd.weight", n_vocab, EMBED)
    ones("output_norm.weight", EMBED)
    tensor("output.weight", n_vocab, EMBED)
    for i in range(LAYERS):
        ones(f"blk.{i}.attn_norm.weight", EMBED)
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{t}.weight", EMBED, EMBED)
        ones(f"blk.{i}.ffn_norm.weight", EMBED)
        tensor(f"blk.{i}.ffn_gate.weight", FF, EMBED)
        tensor(f"blk.{i}.ffn_up.weight", FF, EMBED)
        tensor(f"blk.{i}.ffn_down.weight", EMBED, FF)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
