"""The arms of `bench/kd_vs_lm.py` (name -> config overrides on top of the preset) and the peer targets its report checks.

Shared by the bench (`kd_vs_lm.py`, which runs them), its report (`kd_report.py`, which lists them in this order) and
the benches built on them (`retok_split.py`, `xtoken_why.py`). Imports nothing.
"""
AUX_OFF = ['loss.weights.feature=0', 'loss.weights.attention=0', 'loss.weights.contrastive=0']
AUX_ON = ['loss.weights.feature={start: 0.01, end: 0.1, ramp_from: 0.3, ramp_to: 0.5, active_from: 0.3}',
          'loss.weights.attention={start: 0.01, end: 0.1, ramp_from: 0.3, ramp_to: 0.5, active_from: 0.3}',
          'loss.weights.contrastive={start: 0.01, end: 0.05, ramp_from: 0.6, ramp_to: 0.8, active_from: 0.6}']
T1 = ['loss.temperature.start=1', 'loss.temperature.end=1']
ARMS = {  # name -> overrides on top of the preset (and --set)
    'lm': ['loss.weights.kd=0', *AUX_OFF],
    'default': [],                                           # the library's defaults as they are (LM + retok KD since issue 29)
    'retok_aux': ['loss.kd_method=retok', *AUX_ON],          # the default before issue 29: retok + feature, attention, contrastive
    'cache': [],                                             # the default, trained from the teacher cache (`kaggle-distill teach` first)
    'shared_vocab': ['loss.kd_method=shared_vocab', *AUX_OFF],
    'hybrid': ['loss.kd_method=hybrid', *AUX_OFF],
    'uld': ['loss.kd_method=uld', *AUX_OFF],
    'projector': ['loss.kd_method=projector', *AUX_OFF],
    'retok': ['loss.kd_method=retok', *AUX_OFF],
    'retok_T1': ['loss.kd_method=retok', 'loss.weights.kd=1', *T1, *AUX_OFF],
    'retok_kd_only': ['loss.kd_method=retok', 'loss.weights.lm=0', 'loss.weights.kd=1', *T1, *AUX_OFF],
    'shared_vocab_kd_only': ['loss.kd_method=shared_vocab', 'loss.weights.lm=0', 'loss.weights.kd=1', *T1, *AUX_OFF],
    'xtoken': ['loss.kd_method=xtoken', 'loss.top_k=8192', *AUX_OFF],        # P-KL on the batch's top 8192 teacher tokens (X-Token's value)
    'xtoken_full': ['loss.kd_method=xtoken', 'loss.top_k=0', *AUX_OFF],      # P-KL on the whole teacher vocabulary
    'xtoken_hkl': ['loss.kd_method=xtoken_hkl', 'loss.top_k=8192', *AUX_OFF],
    'gold': ['loss.weights.kd=0', *AUX_OFF],        # GOLD arms: the student is built as LM only's; GOLDTrainer trains it
    'gold_hybrid': ['loss.weights.kd=0', *AUX_OFF],
    'gold_ce': ['loss.weights.kd=0', *AUX_OFF],
}
GOLD_ARMS = {  # GOLD arm -> GOLDConfig fields besides its ULD defaults (all: use_uld_loss=True, lmbda=0, float32)
    'gold': {},                                                   # ULD alone (GOLD's default: no cross-entropy term)
    'gold_hybrid': {'uld_use_hybrid_loss': True},                 # hybrid ULD, adaptive weights (its default)
    'gold_ce': {'uld_crossentropy_weight': 1.0},                  # ULD + the student's cross-entropy at weight 1, like LM + KD here
}
DEFAULT_ARM = 'retok'   # "the default" of the peer comparison: LM + retok KD, auxiliary terms off: the library default since
                        # issue 29 (the `default` arm's config; recorded as `default_arm` in the result files)
TARGET_SEEDS = 3          # the targets are claims over 3 seeds; fewer: the table says how many ran
PEER_TARGETS = {'gold': 0.05, 'gold_hybrid': 0.05, 'gold_ce': 0.05, 'xtoken': 0.02, 'xtoken_full': 0.02, 'xtoken_hkl': 0.02,
                'xt_first_full': 0.02}   # X-Token's part that differs from retok on the teacher's side alone (bench/xtoken_why.py)
