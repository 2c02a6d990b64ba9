"""--help of every entry point, and the usage errors that must be one line with exit 2.

Shell scripts (recipes' run.sh / run_ssl.sh, the engines units_asr.sh and ssl.sh, utils/ and
local/ scripts): each option a script declares (the ``name=value  # description`` lines above
its ``. utils/parse_options.sh``, with the indented comment lines under them) is listed with its
whole description, read here from the source; nothing else is listed (no internal variable such
as SECONDS or run_args); the header comment is shown (the engines' stage lists). rpq-units: every
subcommand's required options read "(required)", never "(default: None)". ``--help`` exits
before any work, so this file runs in seconds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_helpers import ROOT, env, run

EGS = ROOT / "egs"
TEMPLATE = EGS / "TEMPLATE"
RECIPES = sorted(p.parent.name for p in EGS.glob("*/run.sh"))
ENGINE = TEMPLATE / "units_asr.sh"
DEMO = EGS / "mini_librispeech"  # a recipe with links to every TEMPLATE script
INTERNAL = ("SECONDS", "run_args")
SOURCES_PARSER = re.compile(r"^\s*(\.|source)\s.*parse_options\.sh")


def declared(script: Path) -> dict[str, str]:
    """The options ``script`` declares: name -> full description (the comment on its line and
    the indented comment lines right under it)."""
    opts: dict[str, str] = {}
    name = None
    for line in script.read_text().splitlines():
        if SOURCES_PARSER.match(line):
            break
        if name and re.match(r"^\s+#", line):
            opts[name] += " " + re.sub(r"^\s+#\s?", "", line)
            continue
        name = None
        m = re.match(r"^([A-Za-z_]\w*)=.*?\s#\s?(.*)$", line)
        if m and not m[1].startswith("_") and m[1] not in ("help_message", *INTERNAL):
            name = m[1]
            opts[name] = m[2]
    return opts


def header(script: Path) -> str:
    """The comment block after the shebang, without "# " (shellcheck directives left out)."""
    out = []
    for line in script.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        if not re.match(r"^# *shellcheck ", line):
            out.append(re.sub(r"^# ?", "", line))
    return "\n".join(out)


def flat(text: str) -> str:
    return " ".join(text.split())


def listed(out: str) -> list[str]:
    """The option names a --help output lists ("  --name  [default] description")."""
    return re.findall(r"^  --(\w+) +\[", out, flags=re.M)


def check_help(out: str, script: Path) -> None:
    """``out`` lists exactly the options ``script`` declares, each with its whole description,
    and shows the script's header comment."""
    opts = declared(script)
    assert opts, f"{script}: no options found in the source"
    names = listed(out)
    assert set(names) == set(opts), f"{script}: listed {sorted(set(names) ^ set(opts))}"
    assert len(names) == len(set(names))
    for internal in INTERNAL:
        assert f"--{internal}" not in out
    text = flat(out)
    for name, desc in opts.items():
        # the description as written, up to its last word (not cut where the comment goes on)
        assert flat(desc) in text, f"{script}: --{name} description cut: {desc!r}"
    assert flat(header(script)) in text, f"{script}: header comment not shown in full"


def check_stages(out: str, script: Path) -> None:
    """An engine's --help lists each of its stages (the "#  N  ..." lines of its header)."""
    stages = re.findall(r"^#\s+(\d+)\s+(.+)$", script.read_text().split("\nset -")[0], flags=re.M)
    assert len(stages) >= 5, f"{script}: no stage list in the header"
    text = flat(out)
    for n, what in stages:
        assert flat(f"{n} {what}") in text, f"stage {n} not listed"


def parser_scripts() -> list[Path]:
    """Every shell script (not a link) of the recipes, the engines, utils/ and local/ that
    parses options."""
    found = []
    for p in sorted({*EGS.glob("*/*.sh"), *EGS.glob("*/local/*.sh"), *TEMPLATE.glob("utils/*.sh"),
                     *(ROOT / "local").glob("*.sh")}):
        if p.is_symlink() or not p.is_file() or p.name == "parse_options.sh":
            continue
        if any(SOURCES_PARSER.match(line) for line in p.read_text(errors="replace").splitlines()):
            found.append(p)
    return found


def how_to_run(script: Path) -> tuple[list[str], Path]:
    """The command line and working dir that run ``script`` as its callers do: a recipe's
    scripts from their recipe dir, TEMPLATE's through the demo recipe's links, local/ from the
    repository root."""
    if TEMPLATE in script.parents:
        return [f"./{script.relative_to(TEMPLATE)}"], DEMO
    if EGS in script.parents:
        recipe = EGS / script.relative_to(EGS).parts[0]
        return [f"./{script.relative_to(recipe)}"], recipe
    return [str(script.relative_to(ROOT))], ROOT


@pytest.mark.parametrize("script", parser_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_script_help_lists_every_option_in_full(script):
    cmd, cwd = how_to_run(script)
    r = run([*cmd, "--help"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    check_help(r.stdout, script)
    if script.name in ("units_asr.sh", "ssl.sh"):
        check_stages(r.stdout, script)


def test_entry_points_are_covered():
    names = {str(p.relative_to(ROOT)) for p in parser_scripts()}
    for must in ("egs/TEMPLATE/units_asr.sh", "egs/TEMPLATE/ssl.sh",
                 "egs/TEMPLATE/utils/units_steps.sh", "egs/mini_librispeech/run_ssl.sh",
                 *(f"egs/{r}/local/data.sh" for r in RECIPES)):
        assert must in names


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_help_shows_the_engine(recipe):
    r = run(["./run.sh", "--help"], cwd=EGS / recipe)
    assert r.returncode == 0, r.stderr
    engine = r.stdout[r.stdout.index("Discrete-unit ASR"):]
    # a run.sh with options of its own (egs/asterisk) lists them after the engine's
    engine = engine.split("\nOptions of ./run.sh itself")[0]
    check_help(engine, ENGINE)
    check_stages(r.stdout, ENGINE)


@pytest.mark.parametrize("recipe, where", [(r, w) for r in RECIPES for w in ("recipe", "root")])
def test_recipe_help_names_run_sh_from_anywhere(recipe, where):
    cmd, cwd = ("./run.sh", EGS / recipe) if where == "recipe" else (f"egs/{recipe}/run.sh", ROOT)
    r = run([cmd, "--help"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Usage: {cmd} ")
    assert "Usage: ./units_asr.sh" not in r.stdout
    assert flat(header(EGS / recipe / "run.sh")) in flat(r.stdout)  # the recipe's description


@pytest.mark.parametrize("source, want", [
    ("ssl_birq_l3", {"upstream": "rpq_ssl", "upstream_ckpt": "exp/ssl_birq/encoder.pt",
                     "layer": "3", "feat_tag": "birq_l3"}),
    ("ssl_bestrq_v2_l1", {"upstream": "rpq_ssl", "upstream_ckpt": "exp/ssl_bestrq_v2/encoder.pt",
                          "layer": "1", "feat_tag": "bestrq_v2_l1"}),
    ("whisper_l2", {"upstream": "whisper", "layer": "2", "feat_tag": "whisper_tiny_en_l2"}),
])
def test_asterisk_feature_source_sets_the_engines_upstream(source, want):
    """egs/asterisk/run.sh's sources (run_ssl.sh hands it ssl_<tag>_l<layer>) become the
    engine's upstream options: its help shows them as the values in effect."""
    r = run(["./run.sh", "--feat_sources", source, "--help"], cwd=EGS / "asterisk")
    assert r.returncode == 0, r.stderr
    for opt, value in want.items():
        assert re.search(rf"^  --{opt} +\[{re.escape(value)}\]", r.stdout, re.M), (opt, value)


def test_asterisk_unknown_feature_source_is_one_line():
    r = run(["./run.sh", "--feat_sources", "ssl_l3", "--stage", "2"], cwd=EGS / "asterisk")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "unknown feature source 'ssl_l3'" in r.stderr


@pytest.mark.parametrize("script", sorted(EGS.glob("*/run_ssl.sh")), ids=lambda p: p.parent.name)
def test_run_ssl_help_from_the_repository_root(script):
    r = run([script.relative_to(ROOT), "--help"], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Usage: {script.relative_to(ROOT)} ")
    check_help(r.stdout, script)


def test_engine_help_alone_names_the_engine():
    r = run(["./units_asr.sh", "--help"], cwd=DEMO)
    assert r.returncode == 0 and r.stdout.startswith("Usage: ./units_asr.sh --train_set")


# ---- usage errors: one line on stderr, exit 2, nothing run ------------------------------
def one_line_usage_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stdout == ""
    for w in words:
        assert w in r.stderr


@pytest.mark.parametrize("args, words", [
    (["./run.sh", "--stage", "3", "--stop_stage", "2"], ["--stage 3", "--stop_stage 2"]),
    (["./run.sh", "--stage", "x"], ["--stage", "'x'"]),
    (["./run.sh", "--stop_stage", "2.5"], ["--stop_stage", "'2.5'"]),
    (["./ssl.sh", "--stage", "4", "--stop_stage", "2"], ["--stage 4"]),
    (["./run.sh", "--SECONDS", "5"], ["unknown option --SECONDS"]),
    (["./run.sh", "--run_args", "x"], ["unknown option --run_args"]),
    (["./units_asr.sh", "--PATH", "/x"], ["unknown option --PATH"]),
    (["utils/units_steps.sh"], ["Usage:"]),
    # a discretizer without its config, named before any stage runs (stage 1 included)
    (["./run.sh", "--discretizers", "kmeans rpqq"], ["conf/units/rpqq.yaml", "kmeans pq rpq"]),
    (["./run.sh", "--device", "gpu"], ["--device gpu", "cpu, cuda"]),
])
def test_usage_errors_are_one_line(args, words):
    one_line_usage_error(run(args, cwd=DEMO), *words)


def have_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(have_cuda(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("args", [
    ["--device", "cuda"],  # stages 1-13: 2-4 and 13 use the device
    ["--device", "cuda", "--stage", "13", "--stop_stage", "13"],
    ["--device", "cuda:1", "--stage", "11", "--stop_stage", "11", "--run_continuous", "true"],
])
def test_engine_cuda_without_a_gpu_is_one_line(args):
    one_line_usage_error(run(["./run.sh", *args], cwd=DEMO), "--device cuda", "use --device cpu")


@pytest.mark.skipif(have_cuda(), reason="needs a machine without a CUDA GPU")
def test_engine_cuda_is_not_needed_where_no_stage_uses_it(tmp_path):
    """A GPU recipe's stamps, scoring and table on a CPU login node: --device cuda is only
    checked for a range with stage 2, 3, 4, 13 (or 11 with --run_continuous true)."""
    from recipe_helpers import copy_recipe

    recipe = copy_recipe(tmp_path)
    for args in (["--show_stamp", "feats"], ["--stage", "9", "--stop_stage", "10"],
                 ["--stage", "11", "--stop_stage", "12"]):
        r = run(["./run.sh", "--device", "cuda", "--discretizers", "", *args], cwd=recipe)
        assert r.returncode == 0, r.stderr


def test_run_from_elsewhere_is_one_line():
    r = run(["egs/mini_librispeech/run.sh", "--stage", "1", "--stop_stage", "1"], cwd=ROOT)
    one_line_usage_error(r, "cd egs/mini_librispeech")


# ---- rpq-units --------------------------------------------------------------------------
def subcommands() -> dict[str, argparse.ArgumentParser]:
    from rpq_units.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_rpq_units_help_marks_required_options(capsys):
    from rpq_units.cli import main

    for name, p in subcommands().items():
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        required = [a for a in p._actions if a.required and a.option_strings]
        assert out.count("(required)") == len(required), name
        assert "(default: None)" not in out, name
        if name in ("fit", "encode"):
            assert required


def test_rpq_units_unknown_device_is_one_line(tmp_path):
    exe = Path(sys.executable).with_name("rpq-units")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rpq_units"]
    r = subprocess.run([*cmd, "fit", "--feats_dir", str(tmp_path / "f"), "--out",
                        str(tmp_path / "cb.pt"), "--device", "gpu"],
                       env=env(), capture_output=True, text=True, timeout=120)
    one_line_usage_error(r, "--device gpu", "cpu, cuda")
    assert list(tmp_path.iterdir()) == []


def test_rpq_units_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    from rpq_units.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["fit", "--feats_dir", tmp_path / "f", "--out", tmp_path / "cb.pt"],
                 ["encode", "--data_dir", tmp_path / "d", "--codebook", tmp_path / "cb.pt",
                  "--out", tmp_path / "u"]):
        assert main([*argv, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "--device cuda" in err and "--device cpu" in err
    assert list(tmp_path.iterdir()) == []
