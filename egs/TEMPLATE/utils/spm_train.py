#!/usr/bin/env python
"""Train a sentencepiece model from ``--flag=value`` arguments.

The flags are those of sentencepiece's own ``spm_train`` program (``--input``, ``--vocab_size``,
``--model_type``, ``--model_prefix``, ...), which the sentencepiece and ESPnet wheels do not
install as a command; each is passed to ``sentencepiece.SentencePieceTrainer.train`` as a
keyword argument, so paths with spaces are kept whole. Usage::

    spm_train.py --input=train.txt --vocab_size=5000 --model_type=unigram --model_prefix=bpe
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kwargs = {}
    for a in args:
        if not a.startswith("--") or "=" not in a:
            print(f"spm_train.py: expected --flag=value, got {a!r}", file=sys.stderr)
            return 2
        key, value = a[2:].split("=", 1)
        kwargs[key] = value
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
