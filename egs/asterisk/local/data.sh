#!/usr/bin/env bash
# Asterisk prompts: real recorded speech from Debian packages, one professional speaker per
# language (asterisk-core-sounds-<lang>-g722 audio, asterisk-core-sounds-<lang> transcripts), and
# English clips of other speakers (pocketsphinx-testdata: LibriVox, card names). Kaldi data dirs
# train_<lang>, dev_<lang>, test_<lang> (no prompt text shared between them), test_heldout_en
# with English, {train,dev,test}_multi with --multilingual true. tools/install.sh installs the
# packages (as root); nothing is downloaded here. Clips and lines left out are counted by reason
# in ${datadir}/local/asterisk_<lang>_report.json (see local/data_prep_asterisk.py).
set -euo pipefail

sounds_dir=/usr/share/asterisk/sounds          # voice folders of asterisk-core-sounds-<lang>-g722
docs_dir=/usr/share/doc                        # holds asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz
heldout_dir=/usr/share/pocketsphinx/test/data  # pocketsphinx-testdata (librivox/, cards/); "" for no test_heldout_en
corpus_dir=corpus/asterisk                     # where the decoded 16 kHz wavs go
datadir=data                                   # Kaldi data dirs
langs="en"                                     # languages, of: en fr es it ru
train_ratio=0.80                               # share of prompt texts in train (about the share of clips)
dev_ratio=0.08                                 # share in dev; test gets the rest
split_salt=""                                  # another deterministic split: any string
max_utts=0                                     # keep the first N utterances (by id) per set; 0: all
multilingual=false                             # also write train_multi, dev_multi, test_multi over --langs
lid=false                                      # prefix the multilingual sets' text with [lang]
help_message="Usage: $0 [options]"
. utils/parse_options.sh

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
opts=(--sounds_dir "${sounds_dir}" --docs_dir "${docs_dir}" --heldout_dir "${heldout_dir}"
      --corpus_dir "${corpus_dir}" --datadir "${datadir}" --langs "${langs}"
      --train_ratio "${train_ratio}" --dev_ratio "${dev_ratio}" --split_salt "${split_salt}"
      --max_utts "${max_utts}" --multilingual "${multilingual}" --lid "${lid}")
stamp=${datadir}/local/asterisk.done
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${opts[*]}" ]; then
    echo "$0: ${datadir}/{$(paste -sd, "${datadir}/local/asterisk_sets")} already prepared" >&2
    exit 0
fi
rm -f "${stamp}"
python3 "${root}/local/data_prep_asterisk.py" "${opts[@]}"
while read -r set; do
    utils/validate_data_dir.sh "${datadir}/${set}"
done < "${datadir}/local/asterisk_sets"
echo "${opts[*]}" > "${stamp}"
