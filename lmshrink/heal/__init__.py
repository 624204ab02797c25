"""Healing a pruned model: training-free linear maps folded into the weights (:mod:`.linear`) and knowledge
distillation from the unpruned model (:mod:`.kd`)."""
