"""Share of student positions that get a teacher partner on the whole Shakespeare corpus (38 plays).

    python bench/aligned_share.py        # about 25 s on 2 cores

Student: SmolLM's tokenizer. Teachers: Qwen (the reference teacher's tokenizer) and GPT-2.
"""
from kaggle_distill.alignment import aligned_share
from kaggle_distill.assets import corpus_documents, load_tokenizer

if __name__ == '__main__':
    docs, smol = corpus_documents('shakespeare'), load_tokenizer('smollm')
    for name in ('qwen', 'gpt2'):
        r = aligned_share(docs, smol, load_tokenizer(name))
        print(f"{name:>5} vs smollm: {r['pairs']:,} of {r['student_tokens']:,} student positions aligned ({r['share']:.1%})")
