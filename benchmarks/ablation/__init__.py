"""Limited-data ablation of the teacher regularizers on InfAnFace (issue 5).

``python benchmarks/ablation [--quick] ...`` (or ``python -m benchmarks.ablation`` from the
repository root). Modules: :mod:`.arms` (the configurations, run keys and schedule),
:mod:`.runner` (train and evaluate one run with ``fas_tf.train``), :mod:`.collect` (finished
runs -> rows, summaries, time estimates), :mod:`.report` (``results.md``, CSVs, plots) and
:mod:`.cli` (the command line).

Protocol: train on the InfAnFace batches ``ads`` + ``youtube2`` (159 faces), validate on
``google2`` (51 faces), with seeded training subsets of N in {20, 40, 80, 159} faces
(``TrainConfig.train_limit``; the subset and the initialization both follow the seed) and
seeds 0, 1, 2. Every configuration uses the same schedule and augmentation
(``fas_tf.train.train``); only the teacher / regularizers (or, for ``transfer``, the
``TrainConfig.student`` architecture) change:

- ``none``: heatmap loss only;
- ``cls``, ``feat``, ``sa``, ``ca``: one regularizer with the pretrained dlib teacher;
- ``dlib_all``: all four with the pretrained dlib teacher;
- ``dlib_random``: all four with a randomly initialized dlib-architecture teacher (control);
- ``transfer``: dlib's pretrained trunk fine-tuned with a heatmap head (``fas_tf.transfer``),
  the "adjusting the pre-trained weights" baseline;
- ``facenet_random``: all four with a *random* FaceNet (code-path check only).

Optionally (``--cv=CONFIG[,CONFIG]``) 3-fold cross-validation by batch: train on two batches
(all their faces), test on the third.

Each (config, N, seed) run writes its own directory under ``--out`` (``student.keras``,
``config.json``, ``metrics.json``, ``history.csv``, ``eval.json`` with per-face NMEs and
``run.json`` with timings) and is skipped when its ``metrics.json`` exists, so the grid can be
run in pieces (an interrupted run is resumed from its last epoch). The report (``--docs``:
``results.md``, CSVs, PNGs) is written after every invocation; ``--report_only`` only writes it.

Quick reduced grid (about 20 minutes on 2 idle CPU cores)::

    python benchmarks/ablation --quick

Full grid (can be split with --configs / --sizes / --seeds, e.g. one config per invocation)::

    python benchmarks/ablation
    python benchmarks/ablation --cv=none,dlib_all
    python benchmarks/ablation --report_only
"""
