"""Limited-data ablation of the teacher regularizers on InfAnFace (issues 5 and 16).

``python benchmarks/ablation [--configs=..] [--sizes=..] [--seeds=..] ...`` (or
``python -m benchmarks.ablation`` from the repository root). Modules: :mod:`.arms` (the
configurations, run keys, step schedule), :mod:`.runner` (train and evaluate one run with
``fas_tf.train`` and record it), :mod:`.collect` (the committed rows: ``rows.csv``, per-face
files, migration of the old CSV, summaries, time estimates), :mod:`.stats` (paired differences,
bootstrap over faces and seeds, plain sentences), :mod:`.report` (``results.md`` and plots from
the rows) and :mod:`.cli` (the command line).

Protocol: train on the InfAnFace batches ``ads`` + ``youtube2`` (159 faces), score on
``google2`` (51 faces) once after training, with seeded training subsets of N in
{20, 40, 80, 159} faces (``TrainConfig.train_limit``; subset and initialization follow the seed)
and seeds 0, 1, 2. Every run gets the same number of optimizer steps (``--steps``, default 2000;
epochs = ceil(steps / steps per epoch), so small N is not under-trained), the same student
(``--student``, default the 96 px ``0.5:96:64``) and augmentation; only the teacher, its
regularizers and their weight ``lambda`` (all four jointly; ``--lambdas=0.03,0.1,0.3,1`` runs
each teacher arm once per weight) change, or for ``transfer`` the architecture:

- ``none``: heatmap loss only;
- ``facenet_all`` / ``dlib_all``: all four regularizers with the pretrained teacher;
- ``facenet_random`` / ``dlib_random``: the same with random teacher weights (the controls);
- ``facenet_cls`` ... ``dlib_ca``: one regularizer (the default grid takes the singles of
  ``--single_teacher``, FaceNet unless told otherwise);
- ``transfer``: dlib's pretrained trunk fine-tuned with a heatmap head (``fas_tf.transfer``).

``--cv=CONFIG[,CONFIG]``: 3-fold cross-validation by batch (train on two batches, test on the
third).

Runs that outlive a session: each finished run writes its per-face errors to
``docs/ablation/per_face/<run>.csv`` and then appends one row to ``docs/ablation/rows.csv``
(config, lambda, N, seed, schedule, fold, student, teacher and its sha256, epochs, steps,
seconds, NME, FR@0.10, AUC@0.10, per-subset NME, the reproducing command, code commit, machine,
date), rewriting the CSV atomically. A run whose key is in ``rows.csv`` is skipped before training.
Run folders (``--out``, scratch) only serve to resume a run killed within a session. Each run
trains in a process of its own (``--in_process``: in the runner's, for a debugger), so memory does
not grow run after run and a run killed for memory fails alone. The report
(``docs/results.md``, ``docs/ablation/summary.csv`` and plots) is built from the rows only.

Reruns: ``--rerun`` runs asked runs that are in ``rows.csv`` again on this machine and records
them in ``docs/ablation/reruns.csv`` (per-face files under ``per_face/reruns/``), once per run
and machine; the report compares each with its row. A rerun on a matching machine gives the
row's numbers bit for bit; on other CPU kernels training drifts as with another seed.

A session advances the grid by what fits, then commits the rows::

    python benchmarks/ablation --configs=none,facenet_all,facenet_random --sizes=20,40 \\
        --seeds=0,1,2 --teacher_cache=auto
    git add docs/ablation docs/results.md && git commit -m "ablation: rows of this session"

Other invocations::

    python benchmarks/ablation                        # the whole default grid (120 runs)
    python benchmarks/ablation --configs=none,facenet_all,dlib_all --sizes=80,159 \\
        --lambdas=0.03,0.1,0.3,1 --teacher_cache=auto # the weight sweep
    python benchmarks/ablation --cv=none,facenet_all  # CV by batch
    python benchmarks/ablation --report_only          # rebuild the report from rows.csv
    python benchmarks/ablation --quick                # small check, report in docs/quick
    <a row's command> --rerun                         # run a row again, into reruns.csv

``--teacher_cache=K`` passes ``TrainConfig.teacher_cache`` (precomputed teacher outputs);
``auto`` takes K = epochs / 4 per run (fewer views replay each one more often and cost
accuracy, see docs/teacher_cache.md); 0 (default) runs the teacher online.
"""
