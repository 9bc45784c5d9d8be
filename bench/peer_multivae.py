"""Training speed of mvae_jax against MultiVae (PyTorch), same models, architectures, data and machine.

    pip install -e '.[bench]'      # torch and multivae: an optional extra, never a core dependency
    python bench/peer_multivae.py [--models=jmvae,telbo,mvae,mopoe,mmvae,mvtcae,mmvaeplus] [--batch_size=128]
                                  [--examples=25600] [--epochs=2] [--rounds=2] [--threads=N]
                                  [--libraries=mvae_jax,multivae] [--device=cpu|cuda]
                                  [--data=trimodal|polymnist]

With ``--data=trimodal`` (the default) both sides train on the same trimodal-shaped data (x, y: 28 x 28 pixel
probabilities, binarized afresh at every step; w: one-hot labels of 10 classes;
``--examples`` pairs, reshuffled every epoch) with the same networks: the
models' default MLPs, 512-512 with ReLU, latent 20, a linear output of
2 x latent (mean, log-variance) for the encoders and of the modality's size
(logits) for the decoders; JMVAE's and TELBO's joint encoder concatenates the
flattened modalities into one such MLP. Batch ``--batch_size``, Adam 1e-3,
beta 1, likelihood weights 1, MVAE with one random subset, MMVAE with K = 10
and DReG gradients, MMVAE+ with private latents of 32 and K = 1 (ours has no
K > 1).

With ``--data=polymnist`` both sides train on PolyMNIST-shaped data (5 RGB
28 x 28 images of values in [0, 1], a Laplace likelihood of scale 0.75) with
MoPoE's conv networks: MultiVae's own ``EncoderConvMMNIST`` (its heads with
biases, as MoPoE's and ours) and ``DecoderConvMMNIST``, which are ours layer for
layer (docs/POLYMNIST.md). The models are those whose networks match (MVAE,
MoPoE, MMVAE, MVTCAE, MMVAE+; JMVAE's and TELBO's joint encoders differ), at
their PolyMNIST recipes (``bench/settings.py``: latent 512 and beta 2.5; MMVAE
with K = 1; MMVAE+ with shared and private latents of 32). A model with
private latents gets, in both libraries, one encoder whose output holds the
private and the shared parameters.

- **mvae_jax**: the ``EpochFn`` that ``train.py`` runs (``bench/throughput.py``'s
  ``measure_training``): compiled once, then the best of ``--epochs`` epochs.
  It also reports XLA's FLOPs per step, so every model's GFLOP/s against the
  float32 matmul peak measured in the same run.
- **MultiVae**: MultiVae's own training step, as its ``BaseTrainer.train_step``
  runs it (``model(inputs, epoch=..., dataset_size=..., uses_ddp=False,
  batch_ratio=...)``, zero_grad, backward, Adam step, ``loss.item()``), over
  batches sliced from tensors held in memory: its DataLoader and callbacks are
  left out, so this is an upper bound on its speed through its trainer. One
  warm-up epoch, then the best of ``--epochs`` epochs, each run once with
  ``OMP_WAIT_POLICY=PASSIVE`` and once with ``ACTIVE`` (on 2 cores this alone
  changes torch's speed by up to 1.5x); the best is reported.

Where MultiVae's models differ from ours (stated in the table's notes):
TELBO trains in two stages there (the joint ELBO first, then the unimodal
ELBOs with the joint encoder and decoders frozen): both stages are timed and
the ratio is taken against its faster one. MMVAE sums its loss over the batch
(ours averages; the cost is the same). MultiVae's TELBO computes the
unimodal KL with the joint posterior's variance (see mvae_jax/models/telbo.py).

Each library runs in its own subprocess, alternating (mvae_jax, MultiVae
passive, MultiVae active; ``--rounds`` times), so neither warms the other's
caches or threads. ``--threads`` (default: the machine's cores) sets torch's
intra-op threads; XLA uses every core. ``--device=cuda`` runs MultiVae on the
GPU (once per round: the OpenMP policy is a CPU matter); mvae_jax runs on
whatever JAX's default backend is, so on a GPU machine both are on the GPU. Every result is printed as one JSON line,
then a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

MODELS = ("jmvae", "telbo", "mvae", "mopoe", "mmvae", "mvtcae", "mmvaeplus")
LIBRARIES = ("mvae_jax", "multivae")
LATENT = 20  # mvae_jax's default latent_dim: the trimodal set's (bench/settings.py gives PolyMNIST's)
PRIVATE = 32  # mvae_jax's default private_dim (MMVAE+)
HIDDEN = (512, 512)
LEARNING_RATE = 1e-3
POLYMNIST_MODALITIES = 5
# On PolyMNIST, the models whose networks are the same in both libraries: JMVAE's and TELBO's joint encoder
# is an MLP over the flattened images in MultiVae's, over each image's conv features in mvae_jax's.
POLYMNIST_MODELS = ("mvae", "mopoe", "mmvae", "mvtcae", "mmvaeplus")
DATA = {
    "trimodal": {
        "shapes": {"x": (1, 28, 28), "y": (1, 28, 28), "w": (10,)},
        "distributions": {"x": "bernoulli", "y": "bernoulli", "w": "categorical"},
        "binarize": ("x", "y"),
        "networks": "mlp",
    },
    "polymnist": {
        "shapes": {f"m{i}": (3, 28, 28) for i in range(POLYMNIST_MODALITIES)},
        "distributions": {f"m{i}": "laplace" for i in range(POLYMNIST_MODALITIES)},
        "binarize": (),
        "networks": "conv",
    },
}
LAPLACE_SCALE = 0.75  # the image likelihood's scale (mvae_jax's --image_likelihood=laplace; MoPoE's and MMVAE+'s)


def recipe(data: str, name: str) -> dict:
    """The settings both libraries give ``name`` on ``data``: bench/settings.py's, with mvae_jax's defaults."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import settings

    options = settings.model_options(data, name)
    return {
        "latent": options.get("latent_dim", LATENT),
        "private": options.get("private_dim", PRIVATE),
        "beta": options.get("beta", 1.0),
        "K": options.get("num_samples", 10),
    }


# ----------------------------------------------------------------------------- the MultiVae side (torch)


def _torch_networks(data: str):
    """MultiVae encoder, joint encoder and decoder factories with mvae_jax's networks for ``data`` (imports torch).

    Trimodal: the models' default MLPs. PolyMNIST: MultiVae's own MoPoE networks (``EncoderConvMMNIST`` with
    biased heads, the count of MoPoE's and ours; ``DecoderConvMMNIST``). A model with private latents (MMVAE+)
    gets one encoder of width private + shared whose outputs are split, [private | shared], as mvae_jax's.
    """
    from multivae.models.base.base_config import BaseAEConfig
    from multivae.models.nn.base_architectures import BaseJointEncoder
    from multivae.models.nn.mmnist import DecoderConvMMNIST, EncoderConvMMNIST
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder
    import torch

    shapes, conv = DATA[data]["shapes"], DATA[data]["networks"] == "conv"

    def mlp(fan_in: int, fan_out: int):
        layers, width = [], fan_in
        for h in HIDDEN:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        return torch.nn.Sequential(*layers, torch.nn.Linear(width, fan_out))

    class MLPEncoder(BaseEncoder):
        def __init__(self, shape, latent):
            super().__init__()
            self.latent_dim = latent
            self.net = mlp(int(torch.tensor(shape).prod()), 2 * latent)

        def forward(self, x):
            mean, log_var = self.net(x.flatten(1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Split(BaseEncoder):
        """An encoder of width private + shared, its outputs split into the private (style) and shared parts."""

        def __init__(self, inner, private):
            super().__init__()
            self.inner, self.private = inner, private
            self.latent_dim = inner.latent_dim - private

        def forward(self, x):
            out, p = self.inner(x), self.private
            mean, log_var = out.embedding, out.log_covariance
            return ModelOutput(
                embedding=mean[..., p:],
                log_covariance=log_var[..., p:],
                style_embedding=mean[..., :p],
                style_log_covariance=log_var[..., :p],
            )

    class JointEncoder(BaseJointEncoder):
        def __init__(self, latent):
            super().__init__()
            self.latent_dim = latent
            self.net = mlp(sum(int(torch.tensor(s).prod()) for s in shapes.values()), 2 * latent)

        def forward(self, x: dict):
            mean, log_var = self.net(torch.cat([x[m].flatten(1) for m in shapes], dim=-1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class MLPDecoder(BaseDecoder):
        def __init__(self, shape, latent):
            super().__init__()
            self.shape = tuple(shape)
            self.net = mlp(latent, int(torch.tensor(shape).prod()))

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(*z.shape[:-1], *self.shape))

    def encoder(shape, latent, private=0):
        width = latent + private
        inner = EncoderConvMMNIST(BaseAEConfig(latent_dim=width), bias=True) if conv else MLPEncoder(shape, width)
        return Split(inner, private) if private else inner

    def decoder(shape, latent):
        return DecoderConvMMNIST(BaseAEConfig(latent_dim=latent)) if conv else MLPDecoder(shape, latent)

    return encoder, JointEncoder, decoder


def multivae_model(name: str, data: str = "trimodal"):
    """MultiVae's ``name`` with the networks and options of the module docstring, for ``data``'s shapes."""
    from multivae import models as mv

    encoder, JointEncoder, decoder = _torch_networks(data)
    shapes, distributions = DATA[data]["shapes"], DATA[data]["distributions"]
    r = recipe(data, name)
    common = dict(
        n_modalities=len(shapes),
        latent_dim=r["latent"],
        input_dims=dict(shapes),
        decoders_dist=dict(distributions),
        decoder_dist_params={m: {"scale": LAPLACE_SCALE} for m, d in distributions.items() if d == "laplace"},
        uses_likelihood_rescaling=False,
    )
    if name == "mmvaeplus":  # K = 1 (ours has no K > 1), Laplace posteriors and priors, learned r_d scales
        config = mv.MMVAEPlusConfig(**common, K=1, beta=r["beta"], modalities_specific_dim=r["private"])
        encoders = {m: encoder(s, r["latent"], r["private"]) for m, s in shapes.items()}
        decoders = {m: decoder(s, r["latent"] + r["private"]) for m, s in shapes.items()}
        return mv.MMVAEPlus(config, encoders, decoders)
    encoders = {m: encoder(s, r["latent"]) for m, s in shapes.items()}
    decoders = {m: decoder(s, r["latent"]) for m, s in shapes.items()}
    if name == "jmvae":
        config = mv.JMVAEConfig(**common, alpha=0.1, warmup=10)
        return mv.JMVAE(config, encoders=encoders, decoders=decoders, joint_encoder=JointEncoder(r["latent"]))
    if name == "telbo":
        config = mv.TELBOConfig(**common, warmup=1)
        return mv.TELBO(config, encoders=encoders, decoders=decoders, joint_encoder=JointEncoder(r["latent"]))
    if name == "mvae":
        return mv.MVAE(mv.MVAEConfig(**common, use_subsampling=True, k=1, warmup=10), encoders, decoders)
    if name == "mopoe":
        return mv.MoPoE(mv.MoPoEConfig(**common, beta=r["beta"]), encoders, decoders)
    if name == "mmvae":
        normal = dict(prior_and_posterior_dist="normal", learn_prior=False)
        config = mv.MMVAEConfig(**common, K=r["K"], beta=r["beta"], **normal)
        return mv.MMVAE(config, encoders, decoders)
    if name == "mvtcae":  # alpha 5/6 (ours and the authors' PolyMNIST value; MultiVae's default is 0.1)
        return mv.MVTCAE(mv.MVTCAEConfig(**common, alpha=5 / 6, beta=r["beta"]), encoders, decoders)
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")


def measure_multivae(
    name: str,
    batch_size: int,
    epochs: int,
    n: int,
    threads: int,
    stage: int = 1,
    device: str = "cpu",
    data: str = "trimodal",
) -> dict:
    """Samples/s of MultiVae's training step for ``name`` (module docstring); ``stage`` 2 is TELBO's second."""
    from multivae.data.datasets.base import MultimodalBaseDataset
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    where = torch.device(device)
    model = multivae_model(name, data).to(where)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    rng = np.random.default_rng(0)
    binarize = DATA[data]["binarize"]
    values = {
        m: np.eye(s[0], dtype=np.float32)[rng.integers(0, s[0], n)] if len(s) == 1 else rng.random((n, *s), np.float32)
        for m, s in DATA[data]["shapes"].items()
    }
    examples = {m: torch.from_numpy(v).to(where) for m, v in values.items()}
    steps = n // batch_size
    # TELBO's stage is chosen by the epoch MultiVae passes (epoch <= warmup: the joint ELBO; after: the unimodal ones).
    epoch = 1 if stage == 1 else 2
    if stage == 2:  # what MultistageTrainer does when the second stage starts: a fresh optimizer for what still learns
        model._set_torch_no_grad_on_joint_vae()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)

    def one_epoch(limit: int | None = None) -> float:
        order = torch.randperm(n, device=where)
        start = time.perf_counter()
        for i in range(steps if limit is None else limit):
            idx = order[i * batch_size : (i + 1) * batch_size]
            batch = {m: v[idx] for m, v in examples.items()}
            for m in binarize:  # dynamic binarization
                batch[m] = torch.bernoulli(batch[m])
            inputs = MultimodalBaseDataset(data=batch, labels=None)
            out = model(inputs, epoch=epoch, dataset_size=n, uses_ddp=False, batch_ratio=i / steps)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            loss = out.loss_sum if hasattr(out, "loss_sum") else out.loss
            if loss.item() != loss.item():  # a host sync per step, as its trainer's loss.item()
                raise ArithmeticError(f"MultiVae {name}: NaN loss at step {i}")
        if where.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_epoch(limit=min(steps, 20))  # warm-up: allocator, threads, first-call paths
    times = [one_epoch() for _ in range(epochs)]
    return {
        "library": "multivae",
        "model": name if stage == 1 else f"{name} (stage 2)",
        "data": data,
        "samples_per_s": steps * batch_size / min(times),
        "epoch_s": times,
        "steps": steps,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu",
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }


# ----------------------------------------------------------------------------- the mvae_jax side


def measure_mvae_jax(name: str, batch_size: int, epochs: int, n: int, data: str = "trimodal") -> dict:
    """``bench/throughput.py``'s measurement: the EpochFn train.py runs, on the same data."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax
    from throughput import matmul_peak_gflops, measure_training

    result = measure_training(name, batch_size, epochs, n=n, dataset=data)
    peak = matmul_peak_gflops()
    return {
        "library": "mvae_jax",
        "model": name,
        "data": data,
        "samples_per_s": result["samples_per_s"],
        "epoch_s": result["epoch_s"],
        "steps": n // batch_size,
        "compile_s": result["compile_s"],
        "xla_gflop_per_step": result["xla_gflop_per_step"],
        "gflops": result["gflops"],
        "matmul_peak_gflops": peak,
        "fraction_of_peak": result["gflops"] / peak,
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


# ----------------------------------------------------------------------------- the driver


def _worker(args) -> None:
    if args.worker == "mvae_jax":
        from mvae_jax import cli

        cli.enable_compilation_cache(args.compilation_cache)
        result = measure_mvae_jax(args.models, args.batch_size, args.epochs, args.examples, args.data)
    else:
        result = measure_multivae(
            args.models, args.batch_size, args.epochs, args.examples, args.threads, args.stage, args.device, args.data
        )
    print(json.dumps(result), flush=True)


def _run_worker(library: str, model: str, args, env: dict, stage: int = 1) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        f"--worker={library}",
        f"--models={model}",
        f"--batch_size={args.batch_size}",
        f"--examples={args.examples}",
        f"--epochs={args.epochs}",
        f"--threads={args.threads}",
        f"--stage={stage}",
        f"--device={args.device}",
        f"--data={args.data}",
        f"--compilation_cache={args.compilation_cache}",
    ]
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{library} {model} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def _best(results: list[dict], library: str, model: str, policy: str | None = None) -> dict | None:
    mine = [
        r
        for r in results
        if r["library"] == library and r["model"] == model and policy in (None, r.get("omp_wait_policy"))
    ]
    return max(mine, key=lambda r: r["samples_per_s"]) if mine else None


def table(results: list[dict], names: list[str]) -> str:
    """The Markdown table of the best samples/s per library and model, and the ratio.

    MultiVae's cell gives its best with OMP_WAIT_POLICY=PASSIVE / ACTIVE; the
    ratio is against the better of the two. The share of the matmul peak is
    against the best peak any mvae_jax worker of the run measured. For TELBO, whose step here does
    the work of both of MultiVae's stages, the ratio is given against its
    second stage alone (the closer in work, still less than ours) and against
    one step of each stage per batch (1 / (1/r1 + 1/r2) samples/s).
    """
    # The machine's peak: the best of every worker's measurement (one taken while something else ran reads low).
    peak = max((r["matmul_peak_gflops"] for r in results if r["library"] == "mvae_jax"), default=None)
    rows = [
        "| model | mvae_jax samples/s | % of matmul peak | MultiVae samples/s (passive / active) | ratio |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        ours = _best(results, "mvae_jax", name)
        stages = [name, f"{name} (stage 2)"] if name == "telbo" else [name]
        cells, best = [], []
        for i, model in enumerate(stages):
            by_policy = [_best(results, "multivae", model, p) for p in ("PASSIVE", "ACTIVE")]
            if any(by_policy):
                text = " / ".join(f"{r['samples_per_s']:,.0f}" if r else "-" for r in by_policy)
                cells.append(f"stage {i + 1}: {text}" if len(stages) > 1 else text)
                best.append(max(r["samples_per_s"] for r in by_policy if r))
        ratio = "-"
        if ours and best:
            mine = ours["samples_per_s"]
            if len(best) == 2:
                both = 1 / (1 / best[0] + 1 / best[1])
                ratio = f"{mine / best[1]:.2f}x vs stage 2; {mine / both:.2f}x vs stages 1 + 2"
            else:
                ratio = f"{mine / best[0]:.2f}x"
        rows.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{ours['samples_per_s']:,.0f}" if ours else "-",
                    f"{100 * ours['gflops'] / peak:.0f}%" if ours else "-",
                    "; ".join(cells) or "-",
                    ratio,
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated, of {', '.join(MODELS)} (PolyMNIST: {', '.join(POLYMNIST_MODELS)}; the default)",
    )
    parser.add_argument(
        "--data",
        default="trimodal",
        choices=tuple(DATA),
        help="the trimodal shapes with MLPs, or PolyMNIST's 5 RGB images with MoPoE's conv networks",
    )
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated, of mvae_jax, multivae")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--examples", type=int, default=25_600, help="training pairs per epoch (both libraries)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per run, after a warm-up (best is kept)")
    parser.add_argument("--rounds", type=int, default=2, help="times each library runs each model, alternating")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch's intra-op threads")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, default=1, choices=(1, 2), help=argparse.SUPPRESS)
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where MultiVae (torch) runs (default: cpu)"
    )
    from mvae_jax import cli  # the command-line helpers only: no JAX in the parent process

    cli.add_compilation_cache_flag(parser, bench=True)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)

    allowed_models = POLYMNIST_MODELS if args.data == "polymnist" else MODELS
    names = [m for m in (args.models or ",".join(allowed_models)).split(",") if m]
    libraries = [lib for lib in args.libraries.split(",") if lib]
    for bad, allowed, what in (
        (set(names) - set(allowed_models), allowed_models, "models"),
        (set(libraries) - set(LIBRARIES), LIBRARIES, "libraries"),
    ):
        if bad:
            where = f" (with --data={args.data})" if what == "models" and args.data != "trimodal" else ""
            parser.error(f"unknown {what} {sorted(bad)}; allowed: {', '.join(allowed)}{where}")
    for flag in ("batch_size", "examples", "epochs", "rounds", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}={getattr(args, flag)} must be >= 1")
    if args.examples < args.batch_size:
        parser.error(f"--examples={args.examples} must be at least --batch_size={args.batch_size}")
    if "multivae" in libraries and importlib.util.find_spec("multivae") is None:
        parser.error("MultiVae is not installed: pip install -e '.[bench]' (or --libraries=mvae_jax)")

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.data}: {args.examples} examples, batch {args.batch_size}, {args.epochs} timed epochs, "
        f"{args.rounds} rounds; "
        f"{time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    results = []
    for _ in range(args.rounds):
        for name in names:
            runs = []
            if "mvae_jax" in libraries:
                runs.append(("mvae_jax", {}, 1))
            if "multivae" in libraries:
                for stage in (1, 2) if name == "telbo" else (1,):
                    policies = ("PASSIVE", "ACTIVE") if args.device == "cpu" else ("PASSIVE",)
                    runs += [("multivae", {"OMP_WAIT_POLICY": p}, stage) for p in policies]
            for library, env, stage in runs:
                r = _run_worker(library, name, args, env, stage)
                results.append(r)
                print(json.dumps(r), flush=True)
    print()
    print(table(results, names))


if __name__ == "__main__":
    main()
