#!/usr/bin/env bash
# Parse --option value (or --option=value) arguments onto shell variables of the same name.
#
# Source it after declaring the options as plain variables, one per line with a comment:
#     nj=4          # number of parallel jobs
#     upstream=fbank  # s3prl upstream; a description goes on over the next lines when they
#                     # hold only an indented comment
#     help_message="Usage: $0 [options] <data-dir>"
#     . utils/parse_options.sh
# The options are exactly the top-level "name=value  # description" lines above the line that
# sources this file; a name starting with "_", help_message, SECONDS and run_args are never
# options (internal variables, and variables set without a description, are not options either).
# A "# Title" line at column 0 right before an option heads a group of options.
# --foo_bar and --foo-bar both set foo_bar. Any other option, a missing value, or a non-boolean
# value for a boolean option is a usage error: one line and exit 2. So are the stage bounds of an
# engine (a script with both --stage and --stop_stage) that are not integers or are out of order.
# --help (or -h) prints help_message, the script's header comment and every option with its
# full description and default (the value given before --help), then exits 0. A recipe's run.sh
# that hands its options to an engine exports RPQ_PROG=$0: the engine's --help then names it in
# the usage line and shows its header comment first.
# Parsing stops at the first argument that does not start with "--", or after "--".

_po_caller=${BASH_SOURCE[1]:-$0}
# a recipe script that changed into its own dir (--help from elsewhere) is there by its file name
[ -r "${_po_caller}" ] || [ ! -r "${_po_caller##*/}" ] || _po_caller=${_po_caller##*/}

_po_declared() {  # "O<TAB>name<TAB>description" per option, "S<TAB>title" per group heading
    awk '
        /^[ \t]*(\.|source)[ \t].*parse_options\.sh/ { exit }
        opt != "" && /^[ \t]+#/ {  # an indented comment line goes on with the description
            line = $0; sub(/^[ \t]+#[ \t]?/, "", line); desc = desc " " line; next
        }
        opt != "" { print "O\t" opt "\t" desc; opt = "" }
        !/^#/ { body = 1 }
        /^[A-Za-z_][A-Za-z0-9_]*=/ && match($0, /[ \t]#[ \t]?/) {
            name = $0; sub(/=.*/, "", name)
            if (name ~ /^_/ || name == "help_message" || name == "SECONDS" || name == "run_args") {
                title = ""; next
            }
            if (title != "") print "S\t" title
            title = ""; prev_comment = 0; opt = name; desc = substr($0, RSTART + RLENGTH); next
        }
        body && /^# [^ ]/ && !/^# *shellcheck / {  # a one-line heading, cleared by a second line
            title = (prev_comment ? "" : substr($0, 3)); prev_comment = 1; next
        }
        { title = ""; prev_comment = 0 }
        END { if (opt != "") print "O\t" opt "\t" desc }' "$1"
}

_po_header() {  # the comment block after the shebang line, without its "# "
    awk 'NR == 1 && /^#!/ { next }
         /^#/ { if ($0 !~ /^# *shellcheck /) { sub(/^# ?/, ""); print }; next }
         { exit }' "$1"
}

_po_usage() {  # (local names with the _po_ prefix: they would hide options of the same name)
    local _po_prog=${RPQ_PROG:-} _po_recipe _po_kind _po_opt _po_desc
    if [ -n "${_po_prog}" ] && [ "${_po_prog##*/}" != "${0##*/}" ]; then
        # called by a recipe's run.sh: its name, its description, then this engine's
        _po_recipe=${_po_prog}
        [ -f "${_po_recipe}" ] || _po_recipe=${_po_prog##*/}
        printf 'Usage: %s [options]\n\n' "${_po_prog}"
        if [ -f "${_po_recipe}" ]; then _po_header "${_po_recipe}"; fi
        echo
        echo "${_po_prog##*/} runs the stage engine ${0##*/} with the recipe's settings; every option"
        echo "below goes to it (in brackets: the value the recipe sets, else the engine's default)."
        echo
        echo "${0##*/}:"
    elif [ -n "${help_message:-}" ]; then
        printf '%s\n\n' "${help_message}"
    fi
    if [ -r "${_po_caller}" ]; then _po_header "${_po_caller}"; fi
    echo
    echo "Options (default in brackets):"
    while IFS=$'\t' read -r _po_kind _po_opt _po_desc; do
        if [ "${_po_kind}" = S ]; then
            printf '\n%s:\n' "${_po_opt}"
        elif [ "${_po_kind}" = O ]; then
            printf '  --%-24s [%s] %s\n' "${_po_opt}" "${!_po_opt-}" "${_po_desc}"
        fi
    done <<< "${_po_records}" | awk '{  # wrap long lines at 100 columns, under the default
        line = $0
        while (length(line) > 100) {
            cut = 101
            while (cut > 40 && substr(line, cut, 1) != " ") cut--
            if (cut <= 40) break
            print substr(line, 1, cut - 1)
            line = sprintf("%29s%s", "", substr(line, cut + 1))
        }
        print line }'
}

if [ -r "${_po_caller}" ]; then
    _po_records=$(_po_declared "${_po_caller}")
    _po_names=" $(cut -s -f2 <<< "${_po_records}" | tr '\n' ' ') "
else  # no script file to read the declarations from (bash -c): any set variable is an option
    _po_records=""
    _po_names=""
fi

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
    if [[ ! "${_po_name}" =~ ^[A-Za-z][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ] \
            || [ "${_po_name}" = help_message ] \
            || { [ -n "${_po_names}" ] && [[ "${_po_names}" != *" ${_po_name} "* ]]; }; then
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

# an engine's stage bounds: integers, in order
if [[ "${_po_names}" == *" stage "* && "${_po_names}" == *" stop_stage "* ]]; then
    for _po_name in stage stop_stage; do
        if [[ ! "${!_po_name}" =~ ^[0-9]+$ ]]; then
            echo "$0: --${_po_name} takes a stage number, got '${!_po_name}' (see --help)" >&2
            exit 2
        fi
    done
    # shellcheck disable=SC2154  # both declared by the caller (checked above)
    if [ "${stage}" -gt "${stop_stage}" ]; then
        echo "$0: --stage ${stage} is after --stop_stage ${stop_stage}: no stage to run" >&2
        exit 2
    fi
fi
unset _po_name _po_value _po_shift _po_caller _po_records _po_names
unset -f _po_declared _po_header _po_usage
true
