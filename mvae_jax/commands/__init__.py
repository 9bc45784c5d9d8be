"""The command lines: ``train`` (``python train.py``, ``mvae-train``) and ``evaluate`` (``python eval.py``,
``mvae-eval``). They live in the package so that an installed wheel has them; the top-level train.py and
eval.py of a clone run the same code."""
