# shellcheck shell=bash
# Sourced first by every recipe's run.sh (". "$(dirname "$0")/utils/recipe_dir.sh""): a recipe runs
# from its own dir, where its relative paths (given or default) are meant; --help works from
# anywhere. Exports RPQ_PROG, the name the engine's --help shows (the script the user typed).
export RPQ_PROG=$0
recipe_dir=$(cd "$(dirname "$0")" && pwd -P)
case " $* " in *" --help "*|*" -h "*) cd "${recipe_dir}" || exit ;; esac
[ "$(pwd -P)" = "${recipe_dir}" ] || { echo "$0: run it from its recipe dir: cd $(dirname "$0")" >&2; exit 2; }
