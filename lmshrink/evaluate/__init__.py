"""Measuring models: calibration loss, perplexity, lm-eval tasks; removal candidates by measured CE
(:mod:`.measured`), by KL from the dense model (:mod:`.kl`) and raced over windows (:mod:`.racing`). A meter
measures a removal healed when given the fitted maps (:meth:`.measured.RemovalLoss.healed`); fitting them is the
healing layer's (:mod:`lmshrink.heal.fitness`)."""
