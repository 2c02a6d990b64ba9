#!/usr/bin/env bash
# Parse --option value (or --option=value) arguments onto shell variables of the same name.
#
# Source it after declaring the options as plain variables, one per line with a comment:
#     nj=4          # number of parallel jobs
#     help_message="Usage: $0 [options] <data-dir>"
#     . utils/parse_options.sh
# --foo_bar and --foo-bar both set foo_bar. An option that is not a declared variable, a missing
# value, or a non-boolean value for a boolean option is a usage error: a message and exit 2.
# --help (or -h) prints help_message and every declared option with its default, then exits 0.
# Parsing stops at the first argument that does not start with "--", or after "--".

_po_caller=${BASH_SOURCE[1]:-$0}

_po_usage() {
    # Declared options of the calling script: top-level "name=value  # comment" lines above
    # the line that sources this file.
    [ -n "${help_message:-}" ] && printf '%s\n\n' "${help_message}"
    echo "Options (default in brackets):"
    awk '
        /parse_options\.sh/ { exit }
        /^[A-Za-z_][A-Za-z0-9_]*=/ {
            name = $0; sub(/=.*/, "", name)
            if (name == "help_message" || name ~ /^_/) next
            comment = ""
            if (match($0, /[ \t]#[ \t]?/)) comment = substr($0, RSTART + RLENGTH)
            print name "\t" comment
        }' "${_po_caller}" | while IFS=$'\t' read -r _po_name _po_comment; do
        printf '  --%-24s [%s] %s\n' "${_po_name}" "${!_po_name-}" "${_po_comment}"
    done
}

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            _po_usage
            exit 0 ;;
        --)
            shift
            break ;;
        --*=*)
            _po_name=${1%%=*}
            _po_value=${1#*=}
            _po_shift=1 ;;
        --*)
            _po_name=$1
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value (see --help)" >&2
                exit 2
            fi
            _po_value=$2
            _po_shift=2 ;;
        *)
            break ;;
    esac
    _po_name=${_po_name#--}
    _po_name=${_po_name//-/_}
    if [[ ! "${_po_name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ] \
            || [ "${_po_name}" = help_message ]; then
        echo "$0: unknown option --${_po_name} (see --help)" >&2
        exit 2
    fi
    case "${!_po_name}" in
        true|false)
            if [ "${_po_value}" != true ] && [ "${_po_value}" != false ]; then
                echo "$0: option --${_po_name} takes true or false, got '${_po_value}'" >&2
                exit 2
            fi ;;
    esac
    printf -v "${_po_name}" '%s' "${_po_value}"
    shift "${_po_shift}"
done
unset _po_name _po_value _po_shift _po_caller
true
