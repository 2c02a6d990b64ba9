#!/usr/bin/env python3
"""Check that every file in a wav.scp decodes (soundfile), naming the first one that does not.

    check_audio.py [--full] <wav.scp>

By default each file's header is read (format, rate, length > 0); ``--full`` also decodes every
sample. Entries that are commands (``... |``) are not checked. Exit 1 on the first bad file.
"""

import argparse
import sys

import soundfile as sf
from tqdm import tqdm


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wav_scp")
    p.add_argument("--full", action="store_true", help="decode every sample, not only the header")
    args = p.parse_args()
    with open(args.wav_scp, encoding="utf-8") as f:
        entries = [line.rstrip("\n").split(maxsplit=1) for line in f if line.strip()]
    for entry in tqdm(entries, desc="check audio", unit="file", mininterval=10, disable=len(entries) < 1000):
        if len(entry) != 2:
            print(f"{args.wav_scp}: line without a path: {' '.join(entry)}", file=sys.stderr)
            return 1
        utt, path = entry
        if path.endswith("|"):
            continue
        try:
            if args.full:
                data, _ = sf.read(path, dtype="int16")
                frames = len(data)
            else:
                frames = sf.info(path).frames
        except Exception as e:  # soundfile raises several types for undecodable files
            print(f"{path}: cannot decode audio of utterance {utt}: {e}", file=sys.stderr)
            return 1
        if frames <= 0:
            print(f"{path}: audio of utterance {utt} is empty", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
