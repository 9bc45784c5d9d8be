"""Your own data set, model, scorer and eval section from your own module (mvae_jax.plugins).

The plugin is examples/my_lab/halves.py, a module outside the package found through PYTHONPATH. Each step
runs in a new process, as a user's would: train, resume, restore and eval find what it registered because
config.json names it. The errors are checked in this process without registering anything.
"""

import json
import os
import subprocess
import sys

import pytest

from mvae_jax import plugins
from mvae_jax.config import CONFIG_FILE, Config, load_config
from tests.conftest import ROOT


def _run(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples")}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_plugin_data_set_model_scorer_and_section_train_resume_restore_and_evaluate(tiny_data_dir, tmp_path):
    run = tmp_path / "poe"
    _run(
        "train.py", "--plugins=my_lab.halves", "--model=poe", "--dataset=halves", f"--data_dir={tiny_data_dir}",
        f"--workdir={run}", "--epochs=1", "--hidden_dims=16", "--latent_dim=4", "--batch_size=20", "--validation=20",
    )  # fmt: skip
    assert json.loads((run / CONFIG_FILE).read_text())["plugins"] == ["my_lab.halves"]
    _run("train.py", f"--workdir={run}", "--epochs=2")  # resumed: the plugin comes from config.json
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"elbo_left_right", "elbo_left", "elbo_right"} <= set(lines[-1])
    restored = _run(
        "-c",
        "import sys; from mvae_jax import training; config, model, state = training.restore_model(sys.argv[1]); "
        "print(model.name, model.names, int(state.epoch), config.dataset)",
        str(run),
    )
    assert restored.stdout.split("\n")[0] == "poe ('left', 'right') 2 halves"
    _run(
        "eval.py", f"--workdir={run}", "--classifier_epochs=1", f"--classifier_dir={tmp_path / 'cnn'}",
        "--prior_samples=50", "--tsne_points=20", "--fid_points=20", "--iw_samples=2", "--ll_points=10",
    )  # fmt: skip
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and "skipped" not in metrics
    assert set(metrics["classifiers"]) == {"mnist_left", "halves/right"}  # the plugin's source, the own split
    assert {"left->right", "right->left", "joint->left", "joint->right", "prior"} <= set(metrics["coherence"])
    assert set(metrics["latent_accuracy"]) == {"left", "right", "left,right"}
    assert set(metrics["reconstruction"]) == {"left", "right"}  # the plugin's own section, run by default
    assert all(0 < v < 1 for v in metrics["reconstruction"].values())
    assert "reconstruction" in metrics["eval_flags"]["sections"]


def test_a_module_that_cannot_be_imported_is_named():
    with pytest.raises(plugins.PluginError, match="cannot import 'no_such_lab.halves' \\(ModuleNotFoundError"):
        plugins.load(["no_such_lab.halves"])
    with pytest.raises(ValueError, match="cannot import 'no_such_lab'"):
        Config(plugins=("no_such_lab",)).validate()


def test_a_saved_run_whose_plugin_is_gone_names_its_config(tmp_path):
    Config(workdir=str(tmp_path)).validate()
    from mvae_jax.config import save_config

    save_config(Config(workdir=str(tmp_path)), tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**saved, "plugins": ["gone_lab"], "model": "poe"}))
    with pytest.raises(ValueError, match=f"{CONFIG_FILE}: plugins: cannot import 'gone_lab'.*PYTHONPATH"):
        load_config(tmp_path)


def test_train_and_eval_refuse_a_missing_plugin_with_status_2(tmp_path, capsys):
    import eval as eval_cli
    import train

    for main, prog in ((train.main, "train.py"), (eval_cli.main, "eval.py")):
        with pytest.raises(SystemExit) as exit_info:
            main([f"--workdir={tmp_path}", "--plugins=no_such_lab"])
        assert exit_info.value.code == 2
        assert f"{prog}: error: plugins: cannot import 'no_such_lab'" in capsys.readouterr().err


def test_names_taken_and_new_options_are_refused():
    from mvae_jax import options as opt
    from mvae_jax.data import DATASETS
    from mvae_jax.evaluation.sections import Section

    with pytest.raises(plugins.PluginError, match="model 'jmvae' is already registered"):
        plugins.register_model("jmvae", lambda config, modalities: None)
    with pytest.raises(plugins.PluginError, match="data set 'celeba' is already registered"):
        plugins.register_dataset(DATASETS["celeba"])
    spec = type(DATASETS["celeba"])("mine", lambda c: (), lambda c: None, options=(opt.integer("crop", 1, "x"),))
    with pytest.raises(plugins.PluginError, match="declares options \\['crop'\\], which are not settings"):
        plugins.register_dataset(spec)
    with pytest.raises(plugins.PluginError, match="section 'mine' declares options \\['depth'\\]"):
        plugins.register_section(Section("mine", lambda ctx: {}, options=(opt.integer("depth", 1, "x"),)))
    with pytest.raises(plugins.PluginError, match="section 'coherence' is already registered"):
        plugins.register_section(Section("coherence", lambda ctx: {}))
    with pytest.raises(plugins.PluginError, match="source 'mnist' is a built-in classification set"):
        plugins.register_source("mnist", lambda data_dir: {})
    with pytest.raises(plugins.PluginError, match="register_dataset takes a data.DatasetSpec, got dict"):
        plugins.register_dataset({})
