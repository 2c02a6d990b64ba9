# shellcheck shell=bash
# Done markers that record what produced a result ("stamps"), sourced by the stage engine.
#
# A stamp is the sorted list of "key=value" lines of every setting that decides a result: the
# options, a content hash of each config file and of each input table, and (flattened in) the
# settings of every result it was made from. A stage writes its stamp as "<dir>/.stamp" before
# it starts and copies it to its done marker on success; a rerun skips the stage only when the
# marker holds exactly the stamp the current settings give, and otherwise redoes it (or, for a
# trained model, refuses with the settings that changed). Markers written before stamps existed
# (a date) count as "settings not recorded".
#
#   sig < file                  short content hash (16 hex digits) of stdin
#   file_sig <path>             content hash of a file (of a directory: of its files' names and
#                               contents, e.g. a Whisper checkpoint dir), "none" for an empty path,
#                               "missing" if absent
#   stamp_ok <marker> <stamp>   true when the marker exists and holds exactly <stamp>
#   stamp_diff <marker> <stamp> one line: "key: old -> new; ..." for every setting that differs
#   stamp_write <file> <stamp>  write <stamp> to <file> (temp name, then rename)

sig() { sha256sum | cut -c1-16; }

file_sig() {
    if [ -z "$1" ]; then
        echo none
    elif [ -f "$1" ]; then
        sig < "$1"
    elif [ -d "$1" ]; then
        (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) | sig
    else
        echo missing
    fi
}

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

stamp_diff() {
    if ! grep -q '^[A-Za-z_][A-Za-z0-9_.-]*=' "$1" 2>/dev/null; then
        echo "settings not recorded (made before stamps)"
        return 0
    fi
    # shellcheck disable=SC2016  # an awk program
    awk '
        function val(s) { return substr(s, index(s, "=") + 1) }
        function key(s) { return substr(s, 1, index(s, "=") - 1) }
        NR == FNR { if (index($0, "=")) old[key($0)] = val($0); next }
        index($0, "=") {
            k = key($0); v = val($0); seen[k] = 1
            if (!(k in old)) { out = out sep k ": (not recorded) -> " v; sep = "; " }
            else if (old[k] != v) { out = out sep k ": " old[k] " -> " v; sep = "; " }
        }
        END {
            for (k in old) if (!(k in seen)) { out = out sep k ": " old[k] " -> (not set)"; sep = "; " }
            print (out == "" ? "same settings" : out)
        }' "$1" <(printf '%s\n' "$2")
}

stamp_write() {
    mkdir -p "$(dirname "$1")"
    printf '%s\n' "$2" > "$1.tmp"
    mv "$1.tmp" "$1"
}
