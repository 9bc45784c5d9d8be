"""What train.py and eval.py share: logging set-up, a tqdm progress bar, clean error exits."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
import signal
import sys
import threading

from mvae_jax import errors
from mvae_jax.progress import LineProgress, TqdmReporter, in_notebook, progress_bar  # noqa: F401 (their home)

# Expected, user-facing failures: reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, FloatingPointError, errors.CheckpointError)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def setup_logging(verbose: bool = False, level: str = "INFO") -> None:
    """``level`` logs of mvae_jax on stderr; TensorFlow, absl and orbax kept to warnings.

    Without ``verbose``, the tracebacks of orbax's failed background saves (logged by absl and asyncio, and
    raised as "unraisable" at exit) are cut to one line: train.py reports the failure itself. Records and
    unraisable exceptions that do not come from orbax, tensorstore or asyncio's event loop keep their
    traceback.
    """
    global _previous_unraisablehook
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    if not verbose:
        for name in ("absl", "jax", "orbax", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in ("absl", "asyncio"):
            if _drop_orbax_traceback not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_drop_orbax_traceback)
        if sys.unraisablehook is not _log_unraisable:
            _previous_unraisablehook = sys.unraisablehook
            sys.unraisablehook = _log_unraisable


# Where orbax's background saves fail: their frames are in these packages.
_NOISY_PACKAGES = (f"{os.sep}orbax{os.sep}", f"{os.sep}tensorstore{os.sep}")
_previous_unraisablehook = sys.unraisablehook


def _from_orbax(exc_type, exc, tb) -> bool:
    """Whether an exception is orbax's known noise: raised through orbax or tensorstore code, or asyncio's
    "Event loop is closed" that its threads leave at exit."""
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    while tb is not None:
        if any(p in tb.tb_frame.f_code.co_filename for p in _NOISY_PACKAGES):
            return True
        tb = tb.tb_next
    return False


def _log_unraisable(unraisable) -> None:
    """An exception Python could not raise: orbax's (its asyncio threads after a failed save, at exit) as one
    debug line; any other goes to the hook that was there before (Python's report)."""
    if _from_orbax(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
        logging.getLogger(__name__).debug("ignored: %s: %s", type(unraisable.exc_value).__name__, unraisable.exc_value)
    else:
        _previous_unraisablehook(unraisable)


def _drop_orbax_traceback(record: logging.LogRecord) -> bool:
    """Drop the ERROR records of orbax's failed background saves (logged from its threads, and asyncio's "Task
    exception was never retrieved" about them): train.py reports each failed save itself, in one line that
    names the epoch and the intact checkpoints; --verbose shows them. Orbax's other records keep their line
    but not a traceback of orbax's; every other record is left as it is."""
    from_orbax = record.exc_info and record.exc_info[0] is not None and _from_orbax(*record.exc_info)
    if record.levelno >= logging.ERROR and (from_orbax or any(p in record.pathname for p in _NOISY_PACKAGES)):
        return False
    if from_orbax:
        record.exc_info, record.exc_text = None, None
    return True


COMPILATION_CACHE_ENV = "MVAE_JAX_COMPILATION_CACHE"  # a folder, or "off"; --compilation_cache overrides it
_OFF = ("off", "none", "0", "false")


def compilation_cache_dir(setting: str | None = None) -> Path | None:
    """The folder of JAX's persistent compilation cache, None when off.

    ``setting`` (``--compilation_cache``: a folder or ``off``), else
    ``$MVAE_JAX_COMPILATION_CACHE``, else ``$MVAE_JAX_CACHE/jax`` (default
    ``~/.cache/mvae_jax/jax``), beside the scoring classifiers' cache.
    """
    value = setting if setting is not None else os.environ.get(COMPILATION_CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser().absolute()
    return Path(os.environ.get("MVAE_JAX_CACHE", Path.home() / ".cache" / "mvae_jax")).expanduser() / "jax"


def enable_compilation_cache(setting: str | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``compilation_cache_dir(setting)``; the folder, or None.

    A later train.py or eval.py start then loads the programs it compiled
    before instead of compiling them again (keyed by the program, the jax
    version and the device). A folder that cannot be created or written
    leaves the cache off with a warning: it is a speed-up, never a reason to fail.
    Programs that compile in under ``MIN_COMPILE_S`` seconds are not stored,
    unless ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise (the
    test suite sets 0: its processes compile the same small programs again and again).
    """
    folder = compilation_cache_dir(setting)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        logging.getLogger("mvae_jax").warning("compilation cache off: cannot create %s (%s)", folder, e)
        return None
    if not os.access(folder, os.W_OK):
        logging.getLogger("mvae_jax").warning("compilation cache off: %s is not writable", folder)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    minimum = float(os.environ.get(MIN_COMPILE_ENV, MIN_COMPILE_S))  # read here too: JAX may be imported already
    jax.config.update("jax_persistent_cache_min_compile_time_secs", minimum)
    return folder


def add_compilation_cache_flag(parser, bench: bool = False) -> None:
    """``--compilation_cache=DIR|off`` (``enable_compilation_cache`` reads it): on by default for train.py and
    eval.py; off for bench/ (``bench=True``), so that a benchmark's compile time measures compiling, while a
    folder (the tests give theirs) makes a repeated run start fast."""
    parser.add_argument(
        "--compilation_cache",
        default="off" if bench else None,
        metavar="DIR|off",
        help="JAX's persistent compilation cache (default off: compile times then measure compiling)"
        if bench
        else "JAX's persistent compilation cache, so that a later start reuses compiled programs (default: "
        "$MVAE_JAX_COMPILATION_CACHE, else ~/.cache/mvae_jax/jax; off: compile everything afresh)",
    )


MIN_COMPILE_S = 0.2  # programs that compile faster are not worth a file (JAX's default is 1 s)
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # set: it decides instead of MIN_COMPILE_S


ABORTED = "aborted at once (Ctrl-C twice): what was written before stays as it was"


@contextlib.contextmanager
def user_errors(prog: str, aborted: str = ABORTED):
    """Turn USER_ERRORS into ``prog: error: message`` and exit status 2; errors.Interrupted into 128 + signal;
    a KeyboardInterrupt (a second Ctrl-C, or one before the handlers are set) into ``prog: <aborted>``, 130.
    Each is one line on stderr, without a traceback."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except errors.Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(128 + (e.signal_number or signal.SIGINT))
    except KeyboardInterrupt:
        print(f"{prog}: {aborted}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def preload_plugins(prog: str, argv, workdir_config: bool = False) -> None:
    """Import the plugins that ``--plugins`` names in ``argv`` (and, with ``workdir_config``, those the
    config.json of ``--workdir`` names, where it has a readable one) before the parser that lists the
    registries (models, data sets, sections) is built; a plugin that cannot be imported is ``prog: error:``
    and exit status 2, like a bad flag."""
    import argparse
    import json
    from pathlib import Path

    from mvae_jax import plugins
    from mvae_jax.config import CONFIG_FILE

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugins", default="")
    pre.add_argument("--workdir", default=None)
    known, _ = pre.parse_known_args(argv)
    names = [n.strip() for n in known.plugins.split(",") if n.strip()]
    if workdir_config and known.workdir is not None:
        try:
            saved = json.loads((Path(known.workdir) / CONFIG_FILE).read_text()).get("plugins", [])
            names += [n for n in saved if isinstance(n, str)]
        except (OSError, ValueError, AttributeError):
            pass  # no or a damaged config.json: eval.py's own checks say so
    with user_errors(prog):
        plugins.load(names)


class StopRequest:
    """Callable: True once SIGINT or SIGTERM arrived (the first asks for a clean stop; a second SIGINT aborts)."""

    def __init__(self):
        self.signal_number = None

    def __call__(self) -> bool:
        return self.signal_number is not None

    def _handle(self, number, frame) -> None:
        if self.signal_number is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, the last checkpoint stays as it is
        self.signal_number = number
        logging.getLogger(__name__).warning(
            "%s: checkpointing at the next step boundary, then exiting%s",
            signal.Signals(number).name,
            " (Ctrl-C again to abort at once)" if number == signal.SIGINT else "",
        )


@contextlib.contextmanager
def stop_on_signals():
    """Yield a StopRequest fed by SIGINT and SIGTERM; errors.Interrupted raised inside gets its signal number."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield request
        return
    previous = {number: signal.signal(number, request._handle) for number in STOP_SIGNALS}
    try:
        yield request
    except errors.Interrupted as e:
        e.signal_number = request.signal_number
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def interrupt_on_signals():
    """SIGINT or SIGTERM raise errors.Interrupted at once, with the signal's number (eval.py: no state to save
    part-way, and each section's result is saved when it ends); repeats are ignored while it unwinds."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return
    raised = []

    def handle(number, frame):
        if raised:
            return
        raised.append(number)
        raise errors.Interrupted(f"interrupted by {signal.Signals(number).name}", number)

    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
