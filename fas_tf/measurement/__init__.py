"""FAS-relevant facial measurements from 68 landmarks, with uncertainties and verdicts
(:mod:`~fas_tf.measurement.measurements`); ``python -m fas_tf.measure`` is the tool."""
