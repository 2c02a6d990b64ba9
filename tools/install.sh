#!/usr/bin/env bash
# One-command installer: makes .venv at the repository root with pinned versions,
# installs the audio tools the demo corpora need (Debian, as root), and rpq_units itself.
# Idempotent: a second run only checks and fills what is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${RPQ_VENV:-${root}/.venv}
python=${PYTHON:-python3}
torch_version=2.9.1
log() { echo "[install] $*" >&2; }

# --- audio tools (espeak-ng, sox, festival), chromium (the demo page's browser test) and real
# recorded speech (egs/asterisk: Asterisk prompts in five languages, pocketsphinx test clips) ---
langs=(en fr es it ru)
apt_pkgs=(espeak-ng sox libsox-fmt-all festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flac chromium
          pocketsphinx-testdata)
for l in "${langs[@]}"; do apt_pkgs+=("asterisk-core-sounds-${l}-g722" "asterisk-core-sounds-${l}"); done
missing=()
for bin in espeak-ng sox festival flac chromium; do
    command -v "${bin}" >/dev/null 2>&1 || missing+=("${bin}")
done
# the corpora are data, not binaries: check a file of each package
speech_files=(/usr/share/pocketsphinx/test/data/librivox/transcription)
sounds=/usr/share/asterisk/sounds
for voice in en_US_f_Allison fr_CA_f_June es_MX_f_Allison it_IT_m_Carlo ru_RU_f_IvrvoiceRU; do
    speech_files+=("${sounds}/${voice}/digits/1.g722")
done
for l in "${langs[@]}"; do speech_files+=("/usr/share/doc/asterisk-core-sounds-${l}/core-sounds-${l}.txt.gz"); done
for f in "${speech_files[@]}"; do
    [ -e "${f}" ] || missing+=("${f}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing audio tools and speech data: ${apt_pkgs[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${apt_pkgs[@]}" >/dev/null
        for f in "${speech_files[@]}"; do
            # a dpkg path-exclude (slim images drop /usr/share/doc) leaves the transcripts out
            [ -e "${f}" ] || log "still missing after apt-get: ${f} (see /etc/dpkg/dpkg.cfg.d/)"
        done
    else
        log "missing audio tools or speech data: ${missing[*]}"
        log "install them with: sudo apt-get install ${apt_pkgs[*]}"
        log "(the demo corpora need espeak-ng; festival is optional; egs/asterisk needs the asterisk and pocketsphinx packages)"
    fi
fi

# --- python environment ---------------------------------------------------------------
if [ ! -x "${venv}/bin/python" ]; then
    log "creating ${venv}"
    "${python}" -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip)
# pip>=26 refuses espnet's dependency tree (a direct-URL dependency of ci_sdr).
"${pip[@]}" install -q "pip<26"
stamp=${venv}/.rpq_units_deps
if [ -f "${stamp}" ] && cmp -s "${stamp}" "${root}/tools/requirements.txt"; then
    log "pinned dependencies already installed"
else
    # the pinned environment takes about 8.1 GiB (torch's CUDA build on x86_64 most of it), and
    # pip unpacks a wheel before it installs it: stop with the numbers rather than halfway through
    need_kib=$(( 10 * 1024 * 1024 ))
    free_kib=$(df -Pk "${venv}" | awk 'NR == 2 { print $4 }')
    if [ -n "${free_kib}" ] && [ "${free_kib}" -lt "${need_kib}" ]; then
        log "error: ${venv}: $(( free_kib / 1024 )) MiB free on its file system, the install needs about 10 GiB (free some space, or set RPQ_VENV to a venv path on a larger disk)"
        exit 1
    fi
    # torch first: espnet with no torch pinned pulls another release.
    log "installing torch==${torch_version} torchaudio==${torch_version}"
    "${pip[@]}" install -q "torch==${torch_version}" "torchaudio==${torch_version}"
    log "installing pinned dependencies"
    "${pip[@]}" install -q -r "${root}/tools/requirements.txt" \
        "torch==${torch_version}" "torchaudio==${torch_version}"
    cp "${root}/tools/requirements.txt" "${stamp}"
fi
"${pip[@]}" install -q --no-deps -e "${root}"
"${venv}/bin/python" -c "import torch, torchaudio, espnet, rpq_units; print('ok: torch', torch.__version__, 'espnet', espnet.__version__)" >&2
log "done: activate with 'source ${venv}/bin/activate'"
