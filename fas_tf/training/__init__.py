"""Training: settings (:mod:`~fas_tf.training.config`) and the machinery of a run."""
