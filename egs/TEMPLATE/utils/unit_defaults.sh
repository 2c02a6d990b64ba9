# shellcheck shell=bash disable=SC2034  # read by the scripts that source this file
# The defaults of the options that both the engine (units_asr.sh) and the unit step script
# (utils/units_steps.sh) take, stated once: both source this file and declare each option from
# it (nj=${default_nj}), so the two cannot disagree and a change here reaches both. The
# rpq-units commands under them get every one of these values as an argument
# (rpq-units dump_feats --portion has no default of its own).
default_nj=2                # parallel jobs of the feature dump and the encoding
default_upstream=fbank      # s3prl upstream
default_layer=-1            # upstream layer (-1: last)
default_feats_portion=0.3   # portion of the utterances whose features are sampled (seeded)
default_max_frames=0        # at most this many frames to fit a discretizer on (0: all sampled)
default_device=cpu          # torch device of the rpq-units steps
