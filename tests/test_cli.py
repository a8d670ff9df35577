"""The command line: a thin layer whose output and exit codes a user relies on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codistill.cli import main


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_data_show_prints_counts_and_balance(capsys, csv_folder: Path) -> None:
    code, out, _ = run(capsys, "data", "show", str(csv_folder), "--labels", "neg,pos")
    assert code == 0
    assert "0=neg, 1=pos" in out
    assert "60" in out and "30 (50.0%)" in out and "10 (50.0%)" in out
    assert "characters" in out and "the film was" in out


def test_data_sample_writes_file(capsys, csv_folder: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "k8.jsonl"
    code, out, _ = run(capsys, "data", "sample", str(csv_folder), "--k", "8", "--seed", "2", "--out", str(out_file))
    assert code == 0 and "wrote 8 rows (4 per class)" in out
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == [0] * 4 + [1] * 4


def test_data_sample_prints_table(capsys, csv_folder: Path) -> None:
    code, out, _ = run(capsys, "data", "sample", str(csv_folder), "--k", "4")
    assert code == 0 and "k=4, seed=0" in out and out.count("the film was") == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "show", "missing_dir/x.csv"], "missing_dir/x.csv: no such file or folder"),
        (["data", "sample", "{folder}", "--k", "3"], "k=3 is not divisible by the number of classes (2)"),
        (["data", "sample", "{folder}", "--k", "200"], "k=200 is larger than the 'train' split (60 rows)"),
        (["data", "show", "{folder}", "--text-column", "body"], "no text column 'body'"),
        (["data", "show", "{folder}", "--label-map", "0-neg"], "--label-map: '0-neg' is not RAW:NAME"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, csv_folder: Path, args: list[str], message: str) -> None:
    code, out, err = run(capsys, *[a.replace("{folder}", str(csv_folder)) for a in args])
    assert code == 2
    assert message in " ".join(err.split())
    assert err.strip().startswith("error:")


def test_demo_config_is_the_documented_grid() -> None:
    from codistill.experiments import demo_config, plan_cells

    cfg = demo_config("x")
    cells = plan_cells(cfg, ["tweets"])
    from codistill.cod import DEFAULT_MODE
    from codistill.experiments.grid import method_label
    assert {c.label for c in cells} == {"kd", method_label("kd", DEFAULT_MODE)} and sorted({c.k for c in cells}) == [8, 16, 32]
    assert sorted({c.seed for c in cells}) == [0, 1, 2] and len(cells) == 18
    assert cfg.datasets[0].data == "tweets" and cfg.student["layers"] == 3


def test_help_on_every_command(capsys) -> None:
    for args in ([], ["data"], ["data", "show"], ["data", "sample"], ["demo"], ["teacher"], ["distill"],
                 ["counterfactuals"], ["quality"], ["sweep"], ["report"], ["export"], ["predict"], ["fetch"]):
        code, out, err = run(capsys, *args, "--help")
        assert code == 0 and "Usage" in out, (args, err)


def test_help_starts_without_torch() -> None:
    script = ("import sys; from codistill.cli import main; code = main(['distill', '--help']); "
              "print('torch' in sys.modules, code)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.stdout.split()[-2:] == ["False", "0"], proc.stderr[-2000:]


def shown_defaults(help_text: str) -> dict[str, str]:
    """``--flag`` -> the ``[default: X]`` its help shows."""
    text = " ".join(help_text.split())
    chunks = re.split(r"(?<![\w-])(?=--[a-z][\w-]*[ /])", text)
    out = {}
    for chunk in chunks:
        m = re.match(r"(--[a-z][\w-]*)", chunk)
        d = re.search(r"\[default: ([^\]]+)\]", chunk)
        if m and d:
            out[m.group(1)] = d.group(1).strip()
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_help_shows_the_defaults_each_command_applies(capsys, csv_folder: Path, tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    import codistill.runs
    from codistill.config import TEACHER_TRAIN, RunConfig, TrainConfig
    from codistill.errors import CodistillError

    scalar = lambda v: v is None or isinstance(v, (bool, int, float, str))  # noqa: E731
    _, teacher_help, _ = run(capsys, "teacher", "--help")
    _, distill_help, _ = run(capsys, "distill", "--help")
    teacher_shown, distill_shown = shown_defaults(teacher_help), shown_defaults(distill_help)
    student_train = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "seed" or not scalar(getattr(student_train, f.name)) or isinstance(f.default, bool):
            continue
        assert teacher_shown[_flag(f.name)] == str(getattr(TEACHER_TRAIN, f.name)), f.name
        assert distill_shown[_flag(f.name)] == str(getattr(student_train, f.name)), f.name
    assert teacher_shown["--epochs"] != distill_shown["--epochs"]  # the two recipes differ, and each is shown
    assert distill_shown["--k"] == str(RunConfig.k) and distill_shown["--seed"] == str(RunConfig.seed)
    assert teacher_shown["--data"] == distill_shown["--data"] == "tweets"

    applied = {}

    def capture(name):
        def fake(dataset, *args, **kwargs):
            applied[name] = (args, kwargs)
            raise CodistillError("stopped by the test")
        return fake

    monkeypatch.setattr(codistill.runs, "train_teacher", capture("teacher"))
    monkeypatch.setattr(codistill.runs, "distill", capture("distill"))
    assert run(capsys, "teacher", "--data", str(csv_folder), "--out", str(tmp_path / "t"))[0] == 2
    assert applied["teacher"][1]["train"] == TEACHER_TRAIN and applied["teacher"][0][0] == "minilm"
    assert run(capsys, "distill", "--data", str(csv_folder), "--teacher", "t", "--out", str(tmp_path / "s"))[0] == 2
    applied_run = applied["distill"][0][0]
    assert applied_run.train == student_train and (applied_run.k, applied_run.seed) == (RunConfig.k, RunConfig.seed)


def test_config_file_keys_are_checked_at_the_top_level_too(capsys, csv_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("teacher: t\nk: 8\nepochs: 3\n")  # 'epochs' belongs in the train section
    code, _, err = run(capsys, "distill", "--data", str(csv_folder), "--out", str(tmp_path / "o"), "--config", str(config))
    assert code == 2 and "unknown option(s) epochs" in err and str(config) in err


def test_teacher_and_distill_commands(capsys, csv_folder: Path, tiny_teacher: Path, tiny_student: Path, tiny_lm: Path,
                                      tmp_path: Path) -> None:
    teacher_out = tmp_path / "teacher"
    code, out, err = run(capsys, "teacher", "--data", str(csv_folder), "--model", str(tiny_teacher), "--out",
                         str(teacher_out), "--epochs", "2", "--batch-size", "8", "--max-length", "32")
    assert code == 0, err
    assert "teacher trained on 60 rows" in out and "validation" in out and "test" in out
    saved = json.loads((teacher_out / "metrics.json").read_text())
    assert saved["n_train"] == 60
    student_out = tmp_path / "student"
    code, out, err = run(capsys, "distill", "--data", str(csv_folder), "--teacher", str(teacher_out), "--student",
                         str(tiny_student), "--student-layers", "1", "--method", "lwd", "--k", "8", "--seed", "1",
                         "--out", str(student_out), "--epochs", "1", "--min-steps", "3", "--layer-map", "1:2:0.5",
                         "--probe-steps", "0")
    assert code == 0, err
    metrics = json.loads((student_out / "metrics.json").read_text())
    assert metrics["method"] == "lwd" and metrics["steps"] == 3 and metrics["k"] == 8
    assert metrics["terms"][2]["layer_map"] == [{"layer_T": 2, "layer_S": 1, "weight": 0.5}]
    assert f"{metrics['test']['accuracy']:.4f}" in out
    # --cod without a file: the run makes one with the edit search (here over a toy lexicon given in --config)
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps({"great": ["awful"], "lovely": ["dull"], "superb": ["dreadful"], "fine": ["poor"],
                                   "excellent": ["terrible"], "wonderful": ["boring"]}))
    config = tmp_path / "cod.yaml"
    config.write_text(f"generator:\n  name: edits\n  lexicon: {lexicon}\n")
    cod_out = tmp_path / "cod"
    code, out, err = run(capsys, "distill", "--data", str(csv_folder), "--teacher", str(teacher_out), "--student",
                         str(tiny_student), "--student-layers", "1", "--method", "kd", "--k", "8", "--cod",
                         "--out", str(cod_out), "--epochs", "1", "--min-steps", "2", "--fluency-lm", str(tiny_lm),
                         "--probe-steps", "0", "--config", str(config))
    assert code == 0, err
    from codistill import cod as cod_rules
    from codistill.experiments.grid import method_label
    edited = cod_rules.edited_originals(cod_rules.counterfactual_budget(8, cod_rules.DEFAULT_MODE), 2)
    cf_summary = json.loads((cod_out / "counterfactuals.summary.json").read_text())
    assert f"counterfactuals (edits): {cf_summary['flipped']}/{edited} flipped the teacher" in " ".join(out.split())
    assert cf_summary["quality"] == {"lm": str(tiny_lm), "judge": None} and cf_summary["originals"] == edited
    if cf_summary["flipped"]:
        assert f"median fluency ratio {cf_summary['fluency_ratio_median']:.2f}" in " ".join(out.split())
    m = json.loads((cod_out / "metrics.json").read_text())
    assert m["generated"]["path"] == str(cod_out / "counterfactuals.jsonl")
    assert m["cod"] == cod_rules.DEFAULT_MODE and m["n_originals"] == cod_rules.originals(8, cod_rules.DEFAULT_MODE)
    assert method_label("kd", cod_rules.DEFAULT_MODE) in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--layer-map", "1-2"], "--layer-map: '1-2' is not STUDENT:TEACHER"),
        (["--select-on", "test"], "never test"),
        (["--teacher", "{tmp}/no_teacher"], "no such folder"),
    ],
)
def test_distill_bad_options(capsys, csv_folder: Path, tmp_path: Path, args: list[str], message: str) -> None:
    base = ["distill", "--data", str(csv_folder), "--out", str(tmp_path / "o"), "--k", "4"]
    if "--teacher" not in args:
        base += ["--teacher", str(tmp_path / "t")]
    code, _, err = run(capsys, *base, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and message in " ".join(err.split())
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_ctrl_c_exits_130_and_says_so(capsys, monkeypatch) -> None:
    import codistill.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(codistill.data, "load_dataset", interrupted)
    code, _, err = run(capsys, "data", "show", "tweets")
    assert code == 130 and err.strip() == "interrupted"


def test_user_text_is_printed_as_it_is(capsys, csv_folder: Path) -> None:
    code, out, _ = run(capsys, "data", "show", str(csv_folder), "--labels", "[neg],[pos]")
    assert code == 0 and "0=[neg], 1=[pos]" in out  # not read as rich markup
    code, _, err = run(capsys, "sweep", str(csv_folder / "missing [ray].yaml"))
    assert code == 2 and "missing [ray].yaml" in err


def test_outputs_that_would_clobber_an_input_or_cannot_be_written(capsys, csv_folder: Path, tiny_teacher: Path,
                                                                 tmp_path: Path) -> None:
    import shutil

    teacher = shutil.copytree(tiny_teacher, tmp_path / "teacher")
    weights = (teacher / "model.safetensors").read_bytes()
    train = (csv_folder / "train.csv").read_text()
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "great"}\n')
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cases = [
        (["predict", str(teacher), "--data", str(data), "--out", str(data)], "would overwrite an input"),
        (["counterfactuals", "--data", str(csv_folder), "--teacher", str(teacher), "--k", "4",
          "--fluency-lm", "none", "--out", str(csv_folder / "train.csv")], "would overwrite an input"),
        (["distill", "--data", str(csv_folder), "--teacher", str(teacher), "--k", "4", "--out", str(teacher)],
         "would overwrite an input"),
        (["teacher", "--data", str(csv_folder), "--model", str(teacher), "--out", str(teacher)],
         "would overwrite an input"),
        (["distill", "--data", str(csv_folder), "--teacher", str(teacher), "--k", "4", "--out", str(blocker)],
         "is a file; give a folder"),
        (["distill", "--data", str(csv_folder), "--teacher", str(teacher), "--k", "4", "--out", str(blocker / "x")],
         "cannot write there"),  # as a read-only or full filesystem would answer
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in " ".join(err.split()) and len(err.strip().splitlines()) == 1, (argv, err)
    assert (teacher / "model.safetensors").read_bytes() == weights and (csv_folder / "train.csv").read_text() == train
    assert data.read_text() == '{"text": "great"}\n' and blocker.read_text() == "not a folder"


def test_ctrl_c_in_a_long_command_says_what_was_kept(capsys, tmp_path: Path, monkeypatch) -> None:
    import codistill.experiments

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(codistill.experiments, "run_sweep", interrupted)
    config = tmp_path / "s.yaml"
    config.write_text(f"out: {tmp_path / 'sweep'}\ndatasets: [{{data: tweets}}]\n")
    code, _, err = run(capsys, "sweep", str(config))
    assert code == 130 and err.startswith("interrupted: the finished cells") and str(tmp_path / "sweep") in err


def test_a_disk_that_fills_mid_run_is_one_line(capsys, csv_folder: Path, tiny_teacher: Path, tiny_student: Path,
                                               tmp_path: Path, monkeypatch) -> None:
    import errno

    import codistill.runs

    def full(out, *args, **kwargs):  # simulated: the run folder's disk fills when the run is written
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors"))

    monkeypatch.setattr(codistill.runs, "write_run", full)
    code, _, err = run(capsys, "distill", "--data", str(csv_folder), "--teacher", str(tiny_teacher), "--student",
                       str(tiny_student), "--student-layers", "1", "--k", "4", "--out", str(tmp_path / "o"),
                       "--epochs", "1", "--min-steps", "1", "--probe-steps", "0")
    assert code == 2  # the progress bars go to stderr too; the error is its last line, whole
    assert err.strip().splitlines()[-1] == f"error: {tmp_path / 'o' / 'model.safetensors'}: No space left on device"


def test_a_budget_that_cannot_be_halved_fails_before_any_model_loads(capsys, csv_folder: Path, tmp_path: Path) -> None:
    for mode, k, message in (("replace", "6", "k=6: CoD replace edits k/2 originals, balanced over the classes"),
                             ("augment", "3", "k=3: CoD augment edits all k originals")):
        code, _, err = run(capsys, "counterfactuals", "--data", str(csv_folder), "--teacher", str(tmp_path / "none"),
                           "--k", k, "--cod-mode", mode, "--out", str(tmp_path / "cf.jsonl"))  # no such teacher either
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "counterfactuals", "--data", str(csv_folder), "--teacher", str(tmp_path / "none"),
                       "--k", "4", "--cod-mode", "nope", "--out", str(tmp_path / "cf.jsonl"))
    assert code == 2 and "--cod-mode must be one of replace, multi, rounds, augment, got 'nope'" in err
