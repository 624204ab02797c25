"""Measuring models: calibration loss, perplexity, lm-eval tasks; removal candidates by measured CE
(:mod:`.measured`), by KL from the dense model (:mod:`.kl`), raced over windows (:mod:`.racing`) and after linear
healing (:mod:`.healed`)."""
