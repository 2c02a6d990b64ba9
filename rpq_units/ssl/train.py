"""``python -m rpq_units.ssl.train <espnet2.bin.ssl_train arguments>``: BEST-RQ / BiRQ
pre-training on ESPnet's SSL task (Chiu et al., ICML 2022; arXiv 2509.15430).

Registers the plugin's choices (:mod:`rpq_units.ssl.registry`) at import, then runs
``SSLTask.main``. Registration at module level matters for multi-process training: ESPnet's
``--ngpu N`` on one node spawns workers that re-import this module (as ``__mp_main__``) before
building the model, and ``espnet2.bin.launch`` / torchrun start it as a plain module per rank.
"""

from __future__ import annotations

import sys

from espnet2.tasks.ssl import SSLTask

from rpq_units.ssl.registry import register

register()


def main(argv: list[str] | None = None) -> None:
    """Run ESPnet's SSL task with ``argv`` (default ``sys.argv[1:]``)."""
    SSLTask.main(cmd=sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
