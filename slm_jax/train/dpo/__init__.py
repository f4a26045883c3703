"""Direct preference optimisation (Rafailov et al. 2023) as slamkit's Slam recipe runs it through trl: the loss
math (`loss`), the frozen reference (`reference`) and the objective the trainer calls (`objective`)."""
from slm_jax.train.dpo.loss import (DPO_KEYS, LOSS_TYPES, METRIC_NAMES, batch_loss, check_options, dpo_loss,
                                    make_dpo_eval_step, make_dpo_step, option_problems, pair_sums, pair_valid,
                                    sequence_logps, sequence_sums, split_pairs)
from slm_jax.train.dpo.objective import (DPO, config_branches, config_problems, jit_dpo_eval, jit_dpo_step,
                                         jit_ref_logps, path_problems)
from slm_jax.train.dpo.reference import (REFERENCES, Reference, _leaf_sums, check_reference_file, make_ref_logps,
                                         params_fingerprint, precompute_reference, prepare_reference, reference_path)

__all__ = ["DPO", "DPO_KEYS", "LOSS_TYPES", "METRIC_NAMES", "REFERENCES", "Reference", "_leaf_sums", "batch_loss",
           "check_options", "check_reference_file", "config_branches", "config_problems", "dpo_loss",
           "jit_dpo_eval", "jit_dpo_step", "jit_ref_logps", "make_dpo_eval_step", "make_dpo_step", "make_ref_logps",
           "option_problems", "pair_sums", "pair_valid", "params_fingerprint", "path_problems", "precompute_reference",
           "prepare_reference", "reference_path", "sequence_logps", "sequence_sums", "split_pairs"]
