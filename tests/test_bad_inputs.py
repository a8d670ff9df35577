"""Every bad input is one line naming the file, row or option, with exit status 2 (a table of cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from codistill.cli import main

CF_ROW = {"text": "{text}", "label": 1, "counterfactual": "the film was awful", "target_label": 0, "flipped": True,
          "use": True, "pool_index": 0}

# (case, files to write {name: content}, command line, message expected in the one-line error)
CASES = [
    ("counterfactual row without target_label", {"cf.jsonl": [{k: v for k, v in CF_ROW.items() if k != "target_label"}]},
     ["distill", "--counterfactuals", "{tmp}/cf.jsonl", "--cod"], "cf.jsonl, line 1: missing 'target_label'"),
    ("pool_index that is not a number", {"cf.jsonl": [{**CF_ROW, "pool_index": "abc"}]},
     ["distill", "--counterfactuals", "{tmp}/cf.jsonl", "--cod"],
     "cf.jsonl, line 1: 'pool_index' must be a non-negative integer, got 'abc'"),
    ("flipped that is not a boolean", {"cf.jsonl": [{**CF_ROW, "flipped": "yes"}]},
     ["distill", "--counterfactuals", "{tmp}/cf.jsonl"], "cf.jsonl, line 1: 'flipped' must be true or false"),
    ("empty counterfactual file without --cod", {"cf.jsonl": []},
     ["distill", "--counterfactuals", "{tmp}/cf.jsonl"], "cf.jsonl: the file has no rows"),
    ("layer map with a method that has no hidden-state term", {},
     ["distill", "--method", "kd", "--layer-map", "1:2"], "layer_map is used only by lwd and ted; method 'kd'"),
    ("sweep k as a word", {"s.yaml": {"k": "eight"}}, ["sweep", "{tmp}/s.yaml"],
     "sweep.k: expected a list of integers, got 'eight'"),
    ("sweep k as a number", {"s.yaml": {"k": 8}}, ["sweep", "{tmp}/s.yaml"],
     "sweep.k: expected a list of integers, got 8 (e.g. k: [8, 16, 32])"),
    ("sweep seeds as a number", {"s.yaml": {"seeds": 3}}, ["sweep", "{tmp}/s.yaml"],
     "sweep.seeds: expected a list of integers, got 3"),
    ("sweep seeds zero", {"s.yaml": {"seeds": 0}}, ["sweep", "{tmp}/s.yaml"],
     "sweep.seeds: expected a list of integers, got 0"),
    ("sweep seeds empty", {"s.yaml": {"seeds": []}}, ["sweep", "{tmp}/s.yaml"], "sweep.seeds: needs at least one value"),
    ("sweep lr as a word", {"s.yaml": {"train": {"lr": "fast"}}}, ["sweep", "{tmp}/s.yaml"],
     "train.lr: expected a number, got 'fast'"),
    ("sweep methods as a string", {"s.yaml": {"methods": "kd"}}, ["sweep", "{tmp}/s.yaml"],
     "sweep.methods: expected a list of strings, got 'kd'"),
    ("sweep student layers as a word", {"s.yaml": {"student": {"layers": "three"}}}, ["sweep", "{tmp}/s.yaml"],
     "student.layers: expected an integer or null, got 'three'"),
    ("sweep generator option unknown", {"s.yaml": {"generator": {"name": "edits", "max_edit": 2}}},
     ["sweep", "{tmp}/s.yaml"], "generator: unknown option(s) max_edit"),
    ("sweep dataset entry not a mapping", {"s.yaml": {"datasets": ["tweets"]}}, ["sweep", "{tmp}/s.yaml"],
     "sweep.datasets: expected a list of DatasetEntry mappings, got ['tweets']"),
    ("report on a truncated metrics.json", {"run/cells/toy/kd/k4_s0/metrics.json": '{"dataset": "toy", "te'},
     ["report", "{tmp}/run"], "metrics.json: not valid JSON"),
    ("distill option of the wrong type in --config", {"c.yaml": {"train": {"epochs": "many"}}},
     ["distill", "--config", "{tmp}/c.yaml"], "train.epochs: expected an integer, got 'many'"),
    ("llm option with the edit search", {}, ["counterfactuals", "--generator", "edits", "--base-url", "http://x/v1"],
     "--base-url is an option of the other generator"),
    ("LM prompt without the label", {}, ["counterfactuals", "--lm-prompt", "a text:"],
     "generator.lm_prompt must contain '{label}'"),
    ("fluency LM folder missing", {}, ["counterfactuals", "--fluency-lm", "{tmp}/nolm"],
     "language model '{tmp}/nolm': no such folder"),
    ("quality: judge folder missing", {"cf.jsonl": [CF_ROW]},
     ["quality", "{tmp}/cf.jsonl", "--fluency-lm", "none", "--judge", "{tmp}/nojudge"], "judge '{tmp}/nojudge': no such folder"),
    ("sweep dataset name that leaves the folder", {"s.yaml": {"datasets": [{"data": "tweets", "name": "../../x"}]}},
     ["sweep", "{tmp}/s.yaml"], "datasets[].name: '../../x' is not a plain folder name"),
    ("sweep with no workers", {"s.yaml": {}}, ["sweep", "{tmp}/s.yaml", "--workers", "0"], "--workers: must be >= 1, got 0"),
    ("a column named twice", {"d.csv": "text,text,label\na,b,0\n"}, ["data", "show", "{tmp}/d.csv"],
     "d.csv: column 'text' appears more than once in the header"),
    ("predict: a blank line in a one-column file", {"one.csv": "text\ngood\nbad\n\nfine\n"},
     ["predict", "{model}", "--data", "{tmp}/one.csv"], "one.csv, line 4: empty text"),
    ("label map that is neither form", {}, ["data", "show", "{tmp}", "--label-map", "{0: neg}"],
     "--label-map: not a JSON mapping"),
    ("teacher train option unknown in --config", {"c.yaml": {"train": {"bogus": 1}}},
     ["teacher", "--data", "{tmp}", "--out", "{tmp}/out/t", "--config", "{tmp}/c.yaml"],
     "train: unknown option(s) bogus"),
    ("config keys of mixed types", {"c.yaml": {1: "a", "foo": "b"}}, ["distill", "--config", "{tmp}/c.yaml"],
     "unknown option(s) 1, foo"),
    ("config file not UTF-8", {"c.yaml": b"k: caf\xe9\n"}, ["distill", "--config", "{tmp}/c.yaml"],
     "cannot read it"),
    ("data sample over its own input", {"d.csv": "text,label\na,0\nb,1\nc,0\nd,1\n"},
     ["data", "sample", "{tmp}/d.csv", "--k", "2", "--out", "{tmp}/d.csv"], "would overwrite an input"),
    ("sweep budget that CoD cannot halve", {"s.yaml": {"k": [6], "cod": ["none", "replace"]}}, ["sweep", "{tmp}/s.yaml"],
     "k=6: CoD replace edits k/2 originals, balanced over the classes, so k/2 must be divisible by the number of classes (2)"),
    ("sweep budget that augment cannot balance", {"s.yaml": {"k": [3], "cod": ["none", "augment"]}},
     ["sweep", "{tmp}/s.yaml"], "k=3: CoD augment edits all k originals, balanced over the classes"),
    ("alpha not a number", {}, ["distill", "--alpha", "nan"], "distill.alpha: expected a finite number, got nan"),
    ("temperature infinite in --config", {"c.yaml": {"distill": {"temperature": float("inf")}}},
     ["distill", "--config", "{tmp}/c.yaml"], "distill.temperature: expected a finite number, got inf"),
    ("sweep lr NaN", {"s.yaml": {"train": {"lr": float("nan")}}}, ["sweep", "{tmp}/s.yaml"],
     "train.lr: expected a finite number, got nan"),
    ("quality: a row that is not a counterfactual", {"cf.jsonl": [{"text": "a", "label": 0}]},
     ["quality", "{tmp}/cf.jsonl"], "cf.jsonl, line 1: not a counterfactual row (no counterfactual, target_label)"),
    # serving: predict and export ({model} is the tiny teacher's folder)
    ("predict: no text column", {"p.csv": "body,label\nhello,0\n"}, ["predict", "{model}", "--data", "{tmp}/p.csv"],
     "p.csv: cannot tell which column is the text (columns: body, label); pass --text-column"),
    ("predict: named text column missing", {"p.csv": "text\nhello\n"},
     ["predict", "{model}", "--data", "{tmp}/p.csv", "--text-column", "review"], "p.csv: no text column 'review'"),
    ("predict: label not one of the model's classes", {"p.csv": "text,label\ngreat film,1\ndull,fantastic\n"},
     ["predict", "{model}", "--data", "{tmp}/p.csv"],
     "p.csv, line 3: label 'fantastic' is not in the label set (LABEL_0, LABEL_1)"),
    ("predict: empty text", {"p.csv": "text,id\ngreat,1\n\"  \",2\n"}, ["predict", "{model}", "--data", "{tmp}/p.csv"],
     "p.csv, line 3: empty text"),
    ("predict: malformed JSONL", {"p.jsonl": '{"text": "a"}\n{"text": \n'}, ["predict", "{model}", "--data", "{tmp}/p.jsonl"],
     "p.jsonl, line 2: not valid JSON"),
    ("predict: unsupported file type", {"p.txt": "great film\n"}, ["predict", "{model}", "--data", "{tmp}/p.txt"],
     "p.txt: unsupported file type '.txt' (use .csv, .tsv or .jsonl)"),
    ("predict: a file with only a header", {"p.csv": "text,label\n"}, ["predict", "{model}", "--data", "{tmp}/p.csv"],
     "p.csv: no rows to predict"),
    ("predict: output not JSONL", {"p.csv": "text\ngreat\n"},
     ["predict", "{model}", "--data", "{tmp}/p.csv", "--out", "{tmp}/out/p.csv"], "predictions are written as JSONL"),
    ("predict: model folder missing", {"p.csv": "text\ngreat\n"}, ["predict", "{tmp}/nothing", "--data", "{tmp}/p.csv"],
     "model '{tmp}/nothing': no such folder"),
    ("predict: reference of another length", {"p.csv": "text\ngreat\nawful\n", "ref.jsonl": [{"label_id": 0}]},
     ["predict", "{model}", "--data", "{tmp}/p.csv", "--reference", "{tmp}/ref.jsonl"],
     "ref.jsonl: 1 predictions for the 2 rows of"),
    ("predict: reference label not a class index", {"p.csv": "text\ngreat\n", "ref.jsonl": [{"label_id": 7}]},
     ["predict", "{model}", "--data", "{tmp}/p.csv", "--reference", "{tmp}/ref.jsonl"],
     "ref.jsonl, line 1: 'label_id' must be a class index 0..1"),
    ("export without a format", {}, ["export", "{model}", "--out", "{tmp}/out/x"], "choose the export format: --onnx"),
    ("export over a folder that is not an export", {"mine/keep.txt": "mine"},
     ["export", "{model}", "--onnx", "--out", "{tmp}/mine"], "--out {tmp}/mine exists and is not a codistill export folder"),
    ("export of a folder that does not exist", {}, ["export", "{tmp}/nothing", "--onnx", "--out", "{tmp}/out/x"],
     "model '{tmp}/nothing': no such folder"),
]


def _write(tmp: Path, name: str, content, folder: Path) -> None:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".jsonl") and not isinstance(content, str):
        text = json.dumps(content[0]).replace("{text}", "the film was great number 0") + "\n" if content else ""
        path.write_text(text)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif name.endswith(".yaml"):
        sweep = {"out": str(tmp / "sweep_out"), "datasets": [{"data": str(folder)}]} if name == "s.yaml" else {}
        path.write_text(yaml.safe_dump({**sweep, **content}))
    else:
        path.write_text(content)


@pytest.mark.parametrize("case, files, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, files, args, message, tmp_path: Path, csv_folder: Path, tiny_teacher: Path,
                               capsys) -> None:
    for name, content in files.items():
        _write(tmp_path, name, content, csv_folder)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{model}", str(tiny_teacher)) for a in args]
    message = message.replace("{tmp}", str(tmp_path))
    if argv[0] == "predict" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out" / "p.jsonl")]
    if argv[0] in ("distill", "counterfactuals"):
        argv += ["--data", str(csv_folder), "--teacher", str(tiny_teacher), "--out", str(tmp_path / "out"),
                 "--k", "4", "--student", str(tiny_teacher), "--student-layers", "1"][: None if argv[0] == "distill" else 8]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in " ".join(err.split()), err
    assert not (tmp_path / "out" / "metrics.json").exists() and not (tmp_path / "out" / "p.jsonl").exists()
    assert not (tmp_path / "out" / "x").exists()  # no export folder either
    assert not (tmp_path / "sweep_out").exists()  # a bad sweep config creates nothing


def test_data_show_without_train_says_where_examples_come_from(tmp_path: Path, csv_folder: Path, capsys) -> None:
    folder = tmp_path / "no_train"
    folder.mkdir()
    for name in ("validation.csv", "test.csv"):
        (folder / name).write_text((csv_folder / name).read_text())
    assert main(["data", "show", str(folder)]) == 0
    assert "there is no train split; the examples come from 'validation'" in " ".join(capsys.readouterr().out.split())


def test_result_files_are_readable_by_others(tmp_path: Path) -> None:
    import os
    import stat

    from codistill.fileio import atomic_write_json

    old = os.umask(0o022)
    try:
        from codistill import fileio

        path = atomic_write_json(tmp_path / "m.json", {"a": 1})
        assert stat.S_IMODE(path.stat().st_mode) == fileio.FILE_MODE == 0o644
    finally:
        os.umask(old)
