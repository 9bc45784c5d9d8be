"""train.py and eval.py as a user runs them."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden_dims=32", "--latent_dim=4", "--batch_size=20"]


def run(*args, check=True):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_help_lists_every_flag_with_defaults():
    out = run("train.py", "--help").stdout
    for flag in (
        "--model",
        "--dataset",
        "--beta",
        "--alpha",
        "--epochs",
        "--batch_size",
        "--learning_rate",
        "--latent_dim",
        "--seed",
        "--data_dir",
        "--workdir",
    ):
        assert flag in out
    assert "(default: 1.0)" in out and "(default: jmvae)" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag,message",
    [
        ("--beta=-2", "beta=-2.0 is invalid"),
        ("--model=vae", "invalid choice: 'vae'"),
        ("--batch_size=abc", "invalid int value: 'abc'"),
        ("--hidden_dims=5x", "not comma-separated integers"),
    ],
)
def test_bad_flags_fail_before_any_work(flag, message, tmp_path):
    proc = run("train.py", flag, f"--workdir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_missing_data_dir_is_one_clear_line(tmp_path):
    proc = run("train.py", f"--data_dir={tmp_path / 'nothing'}", f"--workdir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "no mnist IDX files under data_dir=" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing behind


@pytest.mark.slow
def test_train_resume_and_eval(tiny_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    run("train.py", "--epochs=1", "--beta=2.0", f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", *TINY)
    # Resume with only --epochs: the other settings come from config.json.
    run("train.py", "--epochs=2", f"--workdir={workdir}")
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["beta"] == 2.0 and saved["hidden_dims"] == [32]
    assert [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    refused = run("train.py", "--epochs=3", "--alpha=0.5", f"--workdir={workdir}", check=False)
    assert refused.returncode == 2 and "alpha: saved 0.1, asked 0.5" in refused.stderr

    out = json.loads(run("eval.py", f"--workdir={workdir}", *TINY_EVAL(tmp_path)).stdout)
    assert out["epoch"] == 2 and out["params"] > 0
    assert set(out["coherence"]) == {
        "x->y",
        "x->w",
        "y->x",
        "y->w",
        "w->x",
        "w->y",
        "x,y->w",
        "x,w->y",
        "y,w->x",
        "joint->x",
        "joint->y",
        "joint->w",
        "prior",
    }
    assert all(0.0 <= v <= 1.0 for v in out["coherence"].values())
    assert set(out["classifiers"]) == {"mnist", "fashion_mnist"}
    assert set(out["latent_accuracy"]) == {"x", "y", "w", "x,y", "x,w", "y,w", "x,y,w"}
    ll = out["log_likelihood"]
    assert {"x", "y", "w", "joint"} <= set(ll) and ll["num_samples"] == 4 and ll["test_points"] == 40
    assert all(ll[k] < 0 for k in ("x", "y", "w", "joint"))
    fid = dict(out["fid"])
    assert fid.pop("points") == 40  # the tiny test split
    generated = {"x->y", "y->x", "w->x", "w->y", "x,w->y", "y,w->x", "joint->x", "joint->y", "prior->x", "prior->y"}
    assert set(fid) == generated and all(v >= 0 for v in fid.values())
    label_coherence = out["label_coherence"]  # samples of q(z | w) classified, 100 per class
    assert set(label_coherence) == {"w->x", "w->y", "samples"} and label_coherence["samples"] == 100
    assert all(0.0 <= label_coherence[k] <= 1.0 for k in ("w->x", "w->y"))
    diversity = out["diversity"]
    assert set(diversity) == {"w->x", "w->y", "real x", "real y", "samples"} and diversity["samples"] == 100
    assert all(diversity[k] >= 0 for k in ("w->x", "w->y", "real x", "real y"))
    objective = out["objective"]  # the loss terms on the 40 tiny test pairs
    assert objective["points"] == 40 and {"loss", "kl", "log_likelihood_x"} <= set(objective)
    assert objective["loss"] > 0 and objective["log_likelihood_x"] < 0
    assert json.loads((workdir / "eval" / "metrics.json").read_text()) == out
    for figure in ("tsne.png", "cross_modal.png", "curves.png", "samples.png"):
        assert (workdir / "eval" / figure).stat().st_size > 10_000

    table = run("eval.py", "--compare", str(workdir), str(workdir), f"--out={tmp_path / 'both.png'}").stdout
    assert table.count("| jmvae beta=2.0 |") == 14  # 2 runs in each of the 7 tables (coherence by inputs too)
    titles = ("**Coherence**", "**Latent accuracy**", "**Log-likelihood (nats)**", "**FID in the scoring CNN")
    for title in (*titles, "**Diversity given the label", "**Coherence of samples given the label"):
        assert title in table
    assert "| run | params | x->w | x->y |" in table
    import eval as eval_cli  # in-process: each refusal comes before any data is read

    for flag, message in (
        ("--model=mmvae", "--model=mmvae but workdir="),
        ("--dataset=celeba", "holds a dataset='trimodal'"),
        ("--step=7", "has no checkpoint of epoch 7 (it has [1, 2])"),
    ):
        with pytest.raises(SystemExit) as exit_:
            eval_cli.main([f"--workdir={workdir}", flag])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert (tmp_path / "both.png").stat().st_size > 10_000


def TINY_EVAL(tmp_path):
    """eval.py flags for the tiny data: few samples and points, classifiers cached under tmp_path."""
    return [
        f"--classifier_dir={tmp_path / 'classifiers'}",
        "--classifier_epochs=1",
        "--iw_samples=4",
        "--tsne_points=40",
        "--prior_samples=100",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        ((), "one of the arguments --workdir --compare is required"),
        (("--workdir=x", "--compare", "y"), "not allowed with argument"),
        (("--workdir=x", "--iw_samples=0"), "--iw_samples=0 is invalid"),
        (("--workdir=x", "--sections=coherence,is"), "unknown sections ['is']"),
        (("--compare", "nowhere"), "run python eval.py --workdir=nowhere first"),
    ],
)
def test_eval_flags_are_checked_first(args, message):
    proc = run("eval.py", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_eval_of_a_missing_workdir_is_one_clear_line(tmp_path):
    proc = run("eval.py", f"--workdir={tmp_path}", check=False)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model": "jmvae"}))  # training stopped before epoch 1 ended
    proc = run("eval.py", f"--workdir={tmp_path}", check=False)
    assert proc.returncode == 2 and "has no checkpoint in checkpoints/" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_eval_scores_the_validation_split_into_its_own_folder(tiny_data_dir, tmp_path, capsys):
    """train.py --validation=N, then eval.py --split=validation writes eval_validation/ and leaves eval/ alone;
    a run without a validation split refuses --split=validation before any work."""
    import eval as eval_cli
    import train as train_cli

    workdir = tmp_path / "run"
    train_cli.main(["--epochs=1", "--validation=30", f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", *TINY])
    assert json.loads((workdir / "config.json").read_text())["validation"] == 30
    eval_cli.main(
        [f"--workdir={workdir}", "--split=validation", "--sections=coherence,latent_accuracy", *TINY_EVAL(tmp_path)]
    )
    out = json.loads((workdir / "eval_validation" / "metrics.json").read_text())
    assert out["split"] == "validation" and not (workdir / "eval").exists()
    assert {"x->w", "y->w", "x->y", "y->x"} <= set(out["coherence"]) and {"x", "y"} <= set(out["latent_accuracy"])
    plain = tmp_path / "plain"
    train_cli.main(["--epochs=1", f"--data_dir={tiny_data_dir}", f"--workdir={plain}", *TINY])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        eval_cli.main([f"--workdir={plain}", "--split=validation"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "was trained without a validation split" in err and "Traceback" not in err


def _raise_from(filename: str):
    """An exception whose traceback passes through code compiled as ``filename``."""
    namespace = {}
    exec(compile("def boom():\n    raise ValueError('disk full')\n", filename, "exec"), namespace)
    try:
        namespace["boom"]()
    except ValueError:
        return sys.exc_info()


def test_logging_cuts_only_orbaxs_tracebacks(monkeypatch):
    """setup_logging drops the ERROR records of orbax's failed saves (train.py reports the failure in one line),
    cuts the traceback of orbax's other records, keeps any other record whole, and passes unraisable
    exceptions that are not orbax's to the previous hook."""
    import logging
    import os

    from mvae_jax import cli

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    cli.setup_logging(verbose=False)
    orbax_file = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "save.py")
    orbax = _raise_from(orbax_file)
    other = _raise_from(os.path.join(os.sep, "site-packages", "somelib", "work.py"))
    for exc_info, kept in ((orbax, False), (other, True)):
        record = logging.LogRecord("absl", logging.WARNING, __file__, 1, "failed", None, exc_info)
        assert logging.getLogger("absl").filter(record)
        assert (record.exc_info is not None) == kept
    shown = lambda level, path, exc_info: logging.getLogger("absl").filter(
        logging.LogRecord("absl", level, path, 1, "failed", None, exc_info)
    )
    assert not shown(logging.ERROR, __file__, orbax)  # e.g. asyncio's "Task exception was never retrieved"
    assert not shown(logging.ERROR, orbax_file, None)  # orbax's "_SignalingThread.run() raised an exception"
    assert shown(logging.ERROR, __file__, other) and shown(logging.WARNING, orbax_file, None)
    seen = []
    monkeypatch.setattr(cli, "_previous_unraisablehook", seen.append)

    class Unraisable:
        def __init__(self, exc_info):
            self.exc_type, self.exc_value, self.exc_traceback = exc_info
            self.err_msg, self.object = None, None

    sys.unraisablehook(Unraisable(orbax))
    sys.unraisablehook(Unraisable((RuntimeError, RuntimeError("Event loop is closed"), None)))
    assert seen == []
    sys.unraisablehook(Unraisable(other))
    assert len(seen) == 1 and seen[0].exc_value is other[1]


def test_eval_sections_are_the_registrys():
    """eval.py's sections are the registry's, in order."""
    import eval as eval_cli
    from mvae_jax.evaluation import LABELLED, SECTIONS

    assert eval_cli.SECTIONS == tuple(SECTIONS) and set(LABELLED) <= set(SECTIONS)


@pytest.mark.slow  # a whole training or evaluation run: the everyday tier stays under 4 minutes
def test_a_section_added_to_the_registry_brings_its_flag_and_writes_its_declared_key(tiny_config, monkeypatch, capsys):
    """docs/ARCHITECTURE.md's "add an eval section": a Section registered with its option and key. eval.py
    offers its flag (checked before any work) and writes its key; a key it did not declare is an error."""
    import dataclasses

    import eval as eval_cli
    from mvae_jax import options as opt
    from mvae_jax import training
    from mvae_jax.evaluation import metrics
    from mvae_jax.evaluation import sections as registry

    points = opt.integer("latent_norm_points", 50, "test pairs whose posterior means are averaged", 1)

    def latent_norm(ctx):
        n = ctx.options.latent_norm_points
        batch = {k: v[:n] for k, v in ctx.scored.items()}
        means = metrics.posterior_means(ctx.model, ctx.params, batch, ctx.model.names)
        return {"latent_norm": float(np.linalg.norm(np.asarray(means), axis=-1).mean())}

    section = registry.Section("latent_norm", latent_norm, keys=("latent_norm",), options=(points,))
    monkeypatch.setitem(registry.SECTIONS, "latent_norm", section)
    assert "latent_norm" in eval_cli.SECTIONS
    help_text = eval_cli.make_parser().format_help()
    assert "--latent_norm_points" in help_text and "latent_norm: test pairs whose" in help_text
    with pytest.raises(SystemExit) as exit_:
        eval_cli.main([f"--workdir={tiny_config.workdir}", "--latent_norm_points=0"])
    assert exit_.value.code == 2 and "--latent_norm_points=0 is invalid" in capsys.readouterr().err
    training.train_sweep([dataclasses.replace(tiny_config, epochs=1)])
    written = eval_cli.main([f"--workdir={tiny_config.workdir}", "--sections=latent_norm", "--latent_norm_points=7"])
    saved = json.loads((Path(tiny_config.workdir) / "eval" / "metrics.json").read_text())
    assert saved["latent_norm"] > 0 and saved["eval_flags"]["latent_norm_points"] == 7, written
    undeclared = registry.Section("latent_norm", lambda ctx: {"norm": 1.0}, keys=("latent_norm",))
    monkeypatch.setitem(registry.SECTIONS, "latent_norm", undeclared)
    with pytest.raises(RuntimeError, match=r"wrote \['norm'\], which it does not declare"):
        eval_cli.evaluate(
            eval_cli.make_parser().parse_args([f"--workdir={tiny_config.workdir}", "--sections=latent_norm"])
        )


@pytest.mark.slow
def test_eval_falls_back_past_a_damaged_checkpoint_and_writes_where_told(tiny_data_dir, tmp_path, capsys, caplog):
    """A damaged newest checkpoint: eval.py evaluates the newest readable one with a warning naming the skipped
    one; --step=<damaged> is one line listing the readable ones. An unwritable eval folder is refused before
    any work, and --out writes the evaluation elsewhere."""
    import eval as eval_cli
    from mvae_jax import training
    from mvae_jax.config import Config

    workdir = tmp_path / "run"
    training.train_and_evaluate(
        Config(
            data_dir=str(tiny_data_dir), workdir=str(workdir), hidden_dims=(16,), latent_dim=4, batch_size=20, epochs=2
        )
    )
    next((workdir / "checkpoints" / "2").rglob("manifest.ocdbt")).unlink()
    eval_cli.main([f"--workdir={workdir}", "--sections=samples"])
    assert json.loads((workdir / "eval" / "metrics.json").read_text())["epoch"] == 1
    assert "the checkpoint of epoch 2" in caplog.text and "evaluating epoch 1" in caplog.text
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        eval_cli.main([f"--workdir={workdir}", "--sections=samples", "--step=2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "the checkpoint of epoch 2 in" in err and "readable checkpoints: [1]" in err and len(err) < 600, err

    blocked = tmp_path / "blocked"
    (workdir / "eval").rename(blocked)
    (workdir / "eval").write_text("a file where the eval folder goes")
    with pytest.raises(SystemExit) as exit_:
        eval_cli.main([f"--workdir={workdir}", "--sections=samples"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "cannot write the evaluation into" in err and "--out=DIR" in err, err
    eval_cli.main([f"--workdir={workdir}", "--sections=samples", f"--out={tmp_path / 'elsewhere'}"])
    assert (tmp_path / "elsewhere" / "samples.png").is_file()


@pytest.mark.slow
def test_train_says_where_the_run_is_and_that_a_finished_run_has_nothing_to_do(tiny_data_dir, tmp_path, capsys):
    import train as train_cli

    workdir = tmp_path / "run"
    args = ["--epochs=1", f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", *TINY]
    train_cli.main(args)
    assert f"evaluate it with: python eval.py --workdir={workdir}" in capsys.readouterr().err
    before = (workdir / "config.json").stat().st_mtime_ns
    train_cli.main(args)
    assert f"nothing to do: {workdir} has 1 epochs (--epochs=1)" in capsys.readouterr().err
    assert (workdir / "config.json").stat().st_mtime_ns == before
    with pytest.raises(SystemExit):
        train_cli.main(["--beta=abc"])
    err = capsys.readouterr().err
    assert "e.g. 0.5,1,2" in err and "1,1,50" not in err


def test_progress_off_a_terminal_is_plain_lines_with_an_eta(caplog, monkeypatch):
    """No carriage returns in a log file: a line at each quarter with the ETA, and 'done' at the end."""
    import logging

    from mvae_jax import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="mvae_jax"):
        with cli.progress_bar(8, "coherence") as bar:
            for _ in range(8):
                bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(",")[0] for line in lines] == [
        f"coherence: {n}/8 it ({p}%)" for n, p in ((2, 25), (4, 50), (6, 75), (8, 100))
    ]
    assert "ETA" in lines[0] and lines[-1].endswith("done") and not any("\r" in line for line in lines)
    caplog.clear()
    reporter = cli.TqdmReporter()
    with caplog.at_level(logging.INFO, logger="mvae_jax"):
        reporter.epoch_start(1, 3, 4)
        for i in range(1, 5):
            reporter.step(i, 10.0)
        reporter.epoch_end({"loss": 9.0, "samples_per_s": 100.0})
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "epoch 1/3: 1/4 step (25%)",
        "epoch 1/3: 2/4 step (50%)",
        "epoch 1/3: 3/4 step (75%)",
    ]


def test_curves_draw_every_loss_term_with_its_validation_twin(tmp_path):
    from mvae_jax import figures

    records = [
        {"epoch": e, "step": 10 * e, "loss": 9.0 - e, "kl": 1.0 + e, "validation_loss": 9.5 - e, "time_s": 1.0}
        for e in (1, 2, 3)
    ]
    assert figures.plot_curves(records, tmp_path / "curves.png", "jmvae") == ["loss", "kl"]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
