"""Every script in bench/ and scripts/ runs on a tiny setting and prints its numbers, so a refactor that
breaks one breaks a test (scripts/train_classifiers.py: tests/test_classifiers.py; examples/: test_examples.py)."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses that train and evaluate

TINY_TRAIN = "--hidden_dims=32 --latent_dim=4 --batch_size=20"


def _run(*args, timeout=900):
    if args[0].startswith("bench/"):  # the benchmarks compile afresh unless told: share the tests' cache
        args = (*args, f"--compilation_cache={os.environ['MVAE_JAX_COMPILATION_CACHE']}")
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_throughput_benchmark_with_forced_device_counts():
    out = _run(
        "bench/throughput.py", "--models=jmvae", "--examples=256", "--batch_size=64", "--epochs=1", "--devices=2"
    )
    (record,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert record["devices"].endswith("x2") and record["samples_per_s"] > 0


def test_conv_layers_benchmark_times_both_implementations_of_every_layer():
    out = _run("bench/conv_layers.py", "--batch_size=4", "--repeats=1", "--features=3,16")
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(records) == 8 and all(r["xla_ms"] > 0 and r["matmul_ms"] > 0 for r in records)
    assert [r["chosen"] for r in records[-2:]] == ["xla", "matmul"]  # 3 channels by XLA, 16 by matmul (a CPU)


def test_step_breakdown_prints_every_part_and_epoch_variant():
    out = _run("bench/step_breakdown.py", "--batch_size=32", "--steps=10", "--rounds=1", "--calls=2")
    for text in ("gradient (forward + backward):", "Adam update of", "binarization draws", "chunks of 1: median"):
        assert text in out


def test_peer_benchmark_runs_its_mvae_jax_half_and_refuses_bad_flags():
    out = _run(
        "bench/peer_multivae.py",
        "--libraries=mvae_jax",
        "--models=jmvae,telbo",
        "--examples=128",
        "--batch_size=64",
        "--epochs=1",
        "--rounds=1",
    )
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["library"], r["model"]) for r in records] == [("mvae_jax", "jmvae"), ("mvae_jax", "telbo")]
    assert all(r["samples_per_s"] > 0 and 0 < r["fraction_of_peak"] < 1.5 for r in records)
    assert "| jmvae |" in out and "| model | mvae_jax samples/s |" in out
    bad = subprocess.run(
        [sys.executable, "bench/peer_multivae.py", "--models=vae"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown models ['vae']; allowed: jmvae, telbo, mvae, mopoe, mmvae" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "bench/peer_multivae.py", "--data=polymnist", "--models=jmvae"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    expected = "unknown models ['jmvae']; allowed: mvae, mopoe, mmvae, mvtcae, mmvaeplus (with --data=polymnist)"
    assert bad.returncode == 2 and expected in bad.stderr


def test_throughput_benchmark_times_polymnist_models_with_their_recipes():
    """--dataset=polymnist: MoPoE's conv networks on 5 RGB images, at bench/settings.py's recipe (latent 512)."""
    out = _run(
        "bench/throughput.py",
        "--dataset=polymnist",
        "--models=mopoe",
        "--examples=128",
        "--batch_size=64",
        "--epochs=1",
        "--no_eval",
        "--no_peak",
    )
    (record,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert record["dataset"] == "polymnist" and record["model"] == "mopoe" and record["samples_per_s"] > 0
    # 5 encoders and decoders of MoPoE's networks at latent 512: some GFLOPs per step of 64, not an MLP's fraction
    assert record["xla_gflop_per_step"] > 5


def test_peer_benchmark_races_multivae_when_the_bench_extra_is_installed():
    pytest.importorskip("multivae", reason="MultiVae is an optional extra: pip install -e '.[bench]'")
    out = _run(
        "bench/peer_multivae.py", "--models=mvae,telbo", "--examples=128", "--batch_size=64", "--epochs=1", "--rounds=1"
    )
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    theirs = {(r["model"], r["omp_wait_policy"]) for r in records if r["library"] == "multivae"}
    assert theirs == {(m, p) for m in ("mvae", "telbo", "telbo (stage 2)") for p in ("PASSIVE", "ACTIVE")}
    assert "| mvae |" in out and "x |" in out  # a ratio in the table
    out = _run(
        "bench/peer_multivae.py",
        "--data=polymnist",
        "--models=mmvaeplus",
        "--libraries=multivae",
        "--examples=64",
        "--batch_size=32",
        "--epochs=1",
        "--rounds=1",
    )
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {(r["model"], r["data"]) for r in records} == {("mmvaeplus", "polymnist")} and len(records) == 2


def test_throughput_benchmark_prints_training_eval_adversarial_and_incomplete_numbers():
    """One process for every variant (each had its own test, and compiled the plain steps again): the plain
    step's numbers and the evaluation's, ``--adversarial`` for every model, ``--missing`` for the models that
    accept incomplete data (jmvae does not)."""
    out = _run(
        "bench/throughput.py",
        "--models=jmvae,mvae",  # mvae, not pemvae: its six subset ELBOs doubled the compile time here
        "--adversarial=auto",
        "--missing=0.5",
        "--examples=256",
        "--batch_size=64",
        "--epochs=1",
        "--eval_points=200",
        "--tsne_points=60",
    )
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    records = {r["model"]: r for r in lines if "samples_per_s" in r}
    assert list(records) == ["jmvae", "jmvae+adv(auto)", "mvae", "mvae+adv(auto)", "mvae+missing(0.5)"]
    for name in ("jmvae", "mvae"):
        r = records[name]
        assert r["samples_per_s"] > 0 and r["xla_gflop_per_step"] > 0 and r["xla_buffers_mib"] > 0
        assert r["chunk_steps"] == 4 and 0 < r["fraction_of_peak"] < 1.5  # 256 / 64 = 4 steps in one chunk
    adversarial = records["jmvae+adv(auto)"]
    assert (
        adversarial["cost_vs_plain"] > 1 and adversarial["xla_gflop_per_step"] > records["jmvae"]["xla_gflop_per_step"]
    )
    assert records["mvae+missing(0.5)"]["cost_vs_plain"] > 0 and "the step costs" in out
    evaluation = [r for r in lines if "coherence_s" in r]
    assert [r["model"] for r in evaluation] == ["jmvae", "mvae"] and "tsne_s" in evaluation[0]
    assert "float32 matmul peak:" in out and "process peak resident memory" in out


def test_incomplete_study_trains_each_fraction_scores_once_and_writes_the_report(tiny_data_dir, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "INCOMPLETE_LABELS.md"
    args = [
        "scripts/incomplete_study.py",
        f"--data_dir={tiny_data_dir}",
        "--models=mvae",
        "--fractions=1,0.1",
        "--seeds=0,1",
        "--epochs=1",
        "--validation=20",
        f"--train_flags={TINY_TRAIN}",
        "--eval_flags=--classifier_epochs=1 --latent_train_points=50 --prior_samples=100",
        f"--runs={runs}",
        f"--out={out}",
    ]
    printed = _run(*args)
    trains = [line for line in printed.splitlines() if line.startswith("$") and "train.py" in line]
    assert len(trains) == 2 and "--missing" not in trains[0] and "--missing=w:0.9" in trains[1]
    config = json.loads((runs / "labels0.1" / "mvae" / "seed1" / "config.json").read_text())
    assert (config["missing"], config["seed"]) == ("w:0.9", 1)
    for fraction in ("1", "0.1"):
        for seed in (0, 1):
            metrics = json.loads(
                (runs / f"labels{fraction}" / "mvae" / f"seed{seed}" / "eval" / "metrics.json").read_text()
            )
            assert {"coherence", "latent_accuracy"} <= set(metrics) and metrics["split"] == "test"
    report = out.read_text()
    assert "| mvae | 0.1 (" in report and " ± " in report and (tmp_path / "incomplete_labels.png").is_file()
    assert "--missing=w:0.9" in report  # the commands
    again = _run(*args)  # resumes: everything is kept
    assert "$ " not in again


def test_incomplete_study_refuses_bad_flags_before_any_work(tmp_path):
    cases = (
        ("--models=jmvae", "allowed: models that accept --missing: mvae,telbo"),
        ("--fractions=0", "allowed: numbers in (0, 1]"),
        ("--fractions=1.5", "allowed: numbers in (0, 1]"),
        ("--seeds=0,0", "distinct integers"),
    )
    _refuses("scripts/incomplete_study.py", cases, tmp_path)


def test_results_script_trains_seeds_selects_on_validation_and_reports_mean_and_std(tiny_data_dir, tmp_path):
    """One run per seed, each scored at its best-validation epoch; every table cell is mean ± std over seeds."""
    report = tmp_path / "RESULTS.md"
    runs = tmp_path / "runs"
    flags = [
        f"--data_dir={tiny_data_dir}",
        "--models=jmvae",
        "--epochs=2",
        "--seeds=0,1",
        "--validation=20",
        f"--runs={runs}",
        f"--out={report}",
        "--iw_samples=4",
        "--ll_points=10",
        "--tsne_points=40",
        "--prior_samples=100",
        f"--train_flags={TINY_TRAIN}",
    ]
    _run("scripts/results.py", *flags, "--eval_jobs=2")  # the two seeds evaluated at once, as on a GPU
    text = report.read_text()
    for seed in (0, 1):
        workdir = runs / "jmvae" / f"seed{seed}"
        config = json.loads((workdir / "config.json").read_text())
        assert config["seed"] == seed and config["validation"] == 20 and config["epochs"] == 2
        metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
        assert (
            metrics["eval_flags"]["step"] == "best" and (workdir / "best_checkpoint" / str(metrics["epoch"])).is_dir()
        )
    row = next(line for line in text.split("**Coherence**")[1].splitlines() if line.startswith("| jmvae |"))
    assert row.count(" ± ") >= 3, row  # the coherence row: mean ± std of each column
    assert "seeds 0, 1" in text and "best validation loss" in text and "Missing runs" not in text
    assert "--step=best" in text and "--seed=0,1 --validation=20" in text  # the two seeds: one sweep
    assert "log-likelihoods on the first 10 with K = 4" in text and "prior on 100 draws" in text
    assert (runs / "jmvae" / "seed0" / "eval" / "tsne.npz").is_file()  # the tSNE: the first seed only
    assert not (runs / "jmvae" / "seed1" / "eval" / "tsne.npz").exists()
    assert (tmp_path / "results_tsne.png").stat().st_size > 10_000
    assert (tmp_path / "results_validation.png").stat().st_size > 10_000
    # Again: everything is kept, nothing retrained, but an evaluation older than a score eval.py gained since
    # (label_coherence) is run again; --summarize_only lists what is missing.
    older = runs / "jmvae" / "seed1" / "eval" / "metrics.json"
    older.write_text(json.dumps({k: v for k, v in json.loads(older.read_text()).items() if k != "label_coherence"}))
    out = _run("scripts/results.py", *flags)
    assert out.count("evaluated with these flags already: kept") == 1 and "eval.py --workdir" in out
    assert "label_coherence" in json.loads(older.read_text())
    # A hand-written reading under "## Reading" survives the rewrite; the machine is the one that ran the runs.
    (runs / "machine.txt").write_text("the machine that trained them\n")
    report.write_text(report.read_text() + "\n## Reading\n\nWords written by hand.\n")
    _run("scripts/results.py", *[f for f in flags if not f.startswith("--seeds")], "--seeds=0,1,2", "--summarize_only")
    text = report.read_text()
    assert "**Missing runs** (not yet trained or evaluated): jmvae seed 2." in text
    assert text.endswith("## Reading\n\nWords written by hand.\n") and text.count("## Reading") == 1
    assert "Machine: the machine that trained them." in text


def _refuses(script: str, cases, tmp_path) -> None:
    """Each (flag, message): ``script`` exits 2 naming it, and writes nothing."""
    for flag, message in cases:
        proc = subprocess.run(
            [sys.executable, script, flag, f"--runs={tmp_path / 'r'}"], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def test_results_script_refuses_bad_flags_before_any_work(tmp_path):
    cases = (
        ("--seeds=0,0", "distinct integers"),
        ("--seeds=a", "not comma-separated integers"),
        ("--models=vae", "unknown ['vae']; allowed: jmvae,telbo"),
        ("--validation=0", "model selection needs a validation split"),
        ("--jobs=0", "--jobs=0 is invalid; allowed: an integer >= 1"),
        ("--eval_jobs=0", "--eval_jobs=0 is invalid; allowed: an integer >= 1"),
        ("--prior_samples=0", "--prior_samples=0 is invalid; allowed: an integer >= 1"),
        ("--reference=vae", "--reference='vae': allowed: one of jmvae,telbo,mvae,pemvae,mmvae,mopoe"),
        ("--model_flags=vae:--num_samples=1", "--model_flags='vae:--num_samples=1': allowed: MODEL:FLAGS"),
        ("--model_flags=mmvae", "--model_flags='mmvae': allowed: MODEL:FLAGS"),
    )
    _refuses("scripts/results.py", cases, tmp_path)


def test_results_script_gives_a_model_its_own_flags(tmp_path):
    from scripts import results

    args = results.make_parser().parse_args(["--train_flags=--latent_dim=8", "--model_flags=mmvae:--num_samples=1"])
    mmvae = results.train_command(args, "mmvae", [0, 1], tmp_path, "python")
    mopoe = results.train_command(args, "mopoe", [0, 1], tmp_path, "python")
    assert mmvae[-2:] == ["--latent_dim=8", "--num_samples=1"] and mopoe[-1] == "--latent_dim=8"


def test_paper_study_sweeps_beta_compares_adversarial_and_writes_the_report(tiny_data_dir, tmp_path):
    report, runs = tmp_path / "STUDY.md", tmp_path / "runs"
    flags = [
        f"--data_dir={tiny_data_dir}",
        "--epochs=2",
        "--validation=20",
        "--betas=0.5,2",
        "--seeds=0,1",
        f"--runs={runs}",
        f"--out={report}",
        f"--train_flags={TINY_TRAIN}",
        "--eval_flags=--prior_samples=100",
    ]
    _run("scripts/paper_study.py", *flags, "--jobs=3")
    text = report.read_text()
    assert [json.loads((runs / "beta" / b / "config.json").read_text())["beta"] for b in ("beta0.5", "beta2.0")] == [
        0.5,
        2.0,
    ]
    for row in ("| beta 0.5 |", "| beta 2.0 |", "| plain, seed 1 |", "| adversarial, seed 0 |"):
        assert row in text
    mean_row = next(line for line in text.splitlines() if line.startswith("| **adversarial, mean ± std** |"))
    assert mean_row.count(" ± ") == 1 + 13  # the title, then every score of the two seeds
    assert "diversity w->x" in text and "sampled w->x" in text and "Missing" not in text
    best = text.split("## Convergence and cost")[1].split("| adversarial, seed 1 | ")[1].split(" | ")
    assert best[0] in ("1", "2") and best[1] == "2", best  # the convergence table: best epoch, of 2 epochs
    assert f"Machine: {(runs / 'machine.txt').read_text().strip()}." in text
    config = json.loads((runs / "adversarial" / "seed1" / "config.json").read_text())
    assert config["adversarial"] and config["seed"] == 1 and config["disc_network"] == "auto"
    for figure in ("study_beta_samples.png", "study_adversarial.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
    older = runs / "plain" / "seed0" / "eval" / "metrics.json"  # as if evaluated before label_coherence existed
    older.write_text(json.dumps({k: v for k, v in json.loads(older.read_text()).items() if k != "label_coherence"}))
    out = _run("scripts/paper_study.py", *flags)  # everything is kept but that evaluation
    assert out.count("trained, kept") == 3 and out.count("is evaluated: kept") == 5  # 3 sweeps, 6 runs
    assert "label_coherence" in json.loads(older.read_text())
    # The report again from the runs' metrics alone (copied off the machine that trained them, no checkpoints):
    # the same tables, the figure kept, a hand-written reading kept.
    copy = tmp_path / "copied"
    for path in runs.rglob("*"):
        if path.is_file() and "checkpoint" not in str(path.relative_to(runs)):
            (copy / path.relative_to(runs)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(runs)).write_bytes(path.read_bytes())
    report.write_text(text.replace(str(runs), str(copy)) + "\n## Reading\n\nWords written by hand.\n")
    figure = (tmp_path / "study_beta_samples.png").read_bytes()
    out = _run(
        "scripts/paper_study.py",
        *[f for f in flags if not f.startswith("--runs")],
        f"--runs={copy}",
        "--summarize_only",
    )
    again = report.read_text()
    assert "no checkpoints under" in out and (tmp_path / "study_beta_samples.png").read_bytes() == figure
    assert "Missing" not in again and again.endswith("## Reading\n\nWords written by hand.\n")
    pointer = "What the tables say is written [at the end](#reading).\n"
    assert pointer in again
    assert again.split("## Reading")[0].replace(pointer, "").strip() == text.replace(str(runs), str(copy)).strip()


def test_paper_study_refuses_bad_flags_before_any_work(tmp_path):
    cases = (
        ("--parts=gan", "--parts='gan': allowed: comma separated beta, adversarial"),
        ("--betas=1,1", "allowed: distinct numbers > 0"),
        ("--seeds=0,-1", "allowed: distinct integers >= 0"),
    )
    _refuses("scripts/paper_study.py", cases, tmp_path)


def test_pemvae_study_runs_an_ablation_chooses_and_scores_the_test_pairs(tiny_data_dir, tmp_path):
    out = _run(
        "scripts/pemvae_study.py",
        f"--data_dir={tiny_data_dir}",
        f"--runs={tmp_path / 'runs'}",
        "--epochs=2",
        "--validation=20",
        "--seeds=0",
        "--final_seeds=0",
        "--variants=baseline,all_subsets_uni3",
        "--baselines=jmvae",
        "--tsne_points=40",
        f"--train_flags={TINY_TRAIN}",
        "--eval_flags=--iw_samples=4 --prior_samples=100",
        "--jobs=2",
    )
    assert "chosen" in out.lower()
    assert (tmp_path / "runs").is_dir()


def test_conv_chunks_benchmark_prints_seconds_per_step():
    out = _run("bench/conv_chunks.py", "--batch_size=4", "--steps=2", "--chunks=2")
    (record,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert record["chunk"] == "2" and record["s_per_step"] > 0 and record["first_epoch_s"] > 0


@pytest.mark.slow
def test_results_script_trains_each_seed_on_its_own_with_sweep_each(tiny_data_dir, tmp_path):
    runs = tmp_path / "runs"
    flags = [f"--data_dir={tiny_data_dir}", "--models=mvtcae", "--seeds=0,1", "--epochs=1", "--validation=20"]
    flags += ["--sections=objective", f"--runs={runs}", f"--out={tmp_path / 'R.md'}", f"--train_flags={TINY_TRAIN}"]
    _run("scripts/results.py", *flags, "--sweep=each")
    trained = [line for line in (runs / "logs" / "mvtcae.log").read_text().splitlines() if line.startswith("$")]
    assert [line.split("--seed=")[1].split()[0] for line in trained] == ["0", "1"]
    for seed in (0, 1):
        assert json.loads((runs / "mvtcae" / f"seed{seed}" / "config.json").read_text())["seed"] == seed
    assert "| mvtcae |" in (tmp_path / "R.md").read_text()


def test_reproduce_polymnist_stops_at_the_time_limit_resumes_and_reports_the_budget(tmp_path):
    """scripts/reproduce_polymnist.py on a tiny PolyMNIST: a time limit stops the sweep and the report says so;
    the same command without it goes on, scores each seed's best epoch once and keeps what is done."""
    from tests.test_polymnist import write_tiny_polymnist_sources

    data = write_tiny_polymnist_sources(tmp_path / "data")
    env = {**os.environ, "MVAE_JAX_CACHE": str(tmp_path / "cache")}
    report, runs = tmp_path / "REPRODUCTIONS.md", tmp_path / "runs"
    flags = [
        "scripts/reproduce_polymnist.py",
        f"--data_dir={data}",
        "--models=mopoe",
        "--seeds=0,1",
        f"--runs={runs}",
        f"--out={report}",
        "--train_flags=--num_modalities=3 --latent_dim=4 --batch_size=20 --validation=20 --epochs=2",
        f"--eval_flags=--coherence_points=20 --classifier_epochs=1 --classifier_dir={tmp_path / 'cnn'}",
    ]

    def run(*more):
        done = subprocess.run([sys.executable, *flags, *more], cwd=ROOT, capture_output=True, text=True, env=env)
        assert done.returncode == 0, f"{more}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    # Stopped 2 s after it started: during its start, or (a fast machine) after its first epoch of 2 steps.
    assert "mopoe: stopped at the time limit" in run("--train_minutes=0.001")
    text = report.read_text()
    reached = re.search(r"\| mopoe \| `configs/mopoe_polymnist.py` \| (\d) of 2 \|.*stopped at the time limit \|", text)
    assert reached and int(reached.group(1)) < 2, text
    scored = 0 if reached.group(1) == "0" else 2  # a seed with an epoch done is scored at it
    assert f"**mopoe, ours** ({scored} of 2 seeds) |" in text and "Sutter et al. 2021" in text

    out = run()  # no limit: the sweep trains on to its 2 epochs, then each seed is scored
    assert "mopoe: trained" in out
    text = report.read_text()
    assert "| mopoe | `configs/mopoe_polymnist.py` | 2 of 2 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| **mopoe, ours** (2 of 2 seeds)"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert " ± " in cells[0] and " ± " in cells[1] and cells[2] == cells[3] == ""  # 3 modalities: 1 or 2 inputs
    for seed in (0, 1):
        metrics = json.loads((runs / "mopoe" / f"seed{seed}" / "eval" / "metrics.json").read_text())
        assert metrics["epoch"] in (1, 2) and metrics["eval_flags"]["step"] == "best"

    out = run()  # done already: nothing trained or scored again
    assert "mopoe: every seed has its 2 epochs: kept" in out and out.count("evaluated at its best epoch") == 2
    with open(report, "a") as f:
        f.write("\n## Reading\n\nWritten by hand.\n")
    run("--summarize_only")
    assert report.read_text().endswith("## Reading\n\nWritten by hand.\n")


def test_reproduce_polymnist_refuses_bad_flags_before_any_work(tmp_path):
    for flag, message in (
        ("--models=mopoe,jmvae", "unknown or repeated ['jmvae']; allowed: mopoe,mvtcae,mmvaeplus,cmvae,jnfdcca"),
        ("--train_minutes=-1", "--train_minutes=-1.0: allowed: a number of minutes > 0"),
        ("--train_flags=--epochs=0", "mopoe: epochs=0 is invalid"),
    ):
        done = subprocess.run(
            [sys.executable, "scripts/reproduce_polymnist.py", "--models=mopoe", f"--runs={tmp_path}", flag],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not any(tmp_path.iterdir())


def test_sweep_cost_benchmark_times_sweeps_of_each_size_against_one_run(tmp_path):
    """bench/sweep_cost.py: train.py with 1 and 2 seeds on a tiny PolyMNIST; the second epoch of each, timed."""
    from tests.test_polymnist import write_tiny_polymnist_sources

    data = write_tiny_polymnist_sources(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "bench/sweep_cost.py", f"--data_dir={data}", "--seeds=1,2", "--train_examples=40",
         "--validation=20", "--batch_size=20", "--train_flags=--num_modalities=3 --latent_dim=4"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MVAE_JAX_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["runs"] for r in records] == [1, 2] and records[0]["over_one_run"] == 1.0
    assert all(r["epoch_s"] > 0 and r["steps"] == 2 for r in records)
    assert records[1]["over_n_runs"] == pytest.approx(records[1]["epoch_s"] / (2 * records[0]["epoch_s"]))
    assert "| runs N | epoch s | against one run | against N runs of one |" in done.stdout
