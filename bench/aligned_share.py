"""Share of student positions that get a teacher partner (alignment by character ends) on a corpus.

    python bench/aligned_share.py                                   # the README's figures: Shakespeare, 38 plays, several minutes on 2 cores
    python bench/aligned_share.py --student gpt2 --teachers qwen smollm --max-docs 5
    python bench/aligned_share.py --corpus my_text.jsonl            # any source `data.source` accepts

Defaults reproduce the README: student SmolLM's tokenizer, teachers Qwen (the reference teacher's tokenizer)
and GPT-2, the whole Shakespeare corpus.
"""
from __future__ import annotations
import argparse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n', 2)[2])
    p.add_argument('--corpus', default='shakespeare', help="asset corpus key or a local .txt/.jsonl/.parquet file (default shakespeare)")
    p.add_argument('--student', default='smollm', help='student tokenizer: asset key, folder or hub id (default smollm)')
    p.add_argument('--teachers', nargs='+', default=['qwen', 'gpt2'], help='teacher tokenizers (default qwen gpt2)')
    p.add_argument('--max-docs', type=int, default=0, help='use only the first N documents; 0 = all (default)')
    return p.parse_args(argv)


def documents(source: str, max_docs: int) -> list[str]:
    "The corpus' documents, through the same readers training uses."
    from itertools import islice
    from kaggle_distill.sources import iter_documents
    return list(islice(iter_documents(source), max_docs or None))


if __name__ == '__main__':
    a = parse_args()
    from kaggle_distill.alignment import aligned_share
    from kaggle_distill.assets import load_tokenizer
    docs, student = documents(a.corpus, a.max_docs), load_tokenizer(a.student)
    for name in a.teachers:
        r = aligned_share(docs, student, load_tokenizer(name))
        print(f"{name:>8} vs {a.student}: {r['pairs']:,} of {r['student_tokens']:,} student positions aligned ({r['share']:.1%})")
